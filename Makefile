# Every target creates .venv and installs the project from pyproject.toml first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
PYTEST_ARGS ?=

.PHONY: all venv test lint demo demo-tdx demo-library serve bench bench-hardening bench-attribution bench-tools \
        compose-tools e2e-compose clean

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

# The adversary for the e2e attack tests (mitmproxy) lives in its own environment: its pins
# (cryptography, pyOpenSSL, protobuf) must not shape the project's.
MITM_VENV := .venv-mitm
MITM_STAMP := $(MITM_VENV)/.installed
$(MITM_STAMP):
	@test -x $(MITM_VENV)/bin/python || $(PYTHON) -m venv $(MITM_VENV)
	$(MITM_VENV)/bin/python -m pip install --quiet 'mitmproxy>=10'
	@touch $@

lint: venv
	$(BIN)/ruff check ratls gateway filters triton_backend tests e2e bench examples conftest.py

# All tests: unit tests, vector tests and the real-stack e2e suite.
test: venv lint $(MITM_STAMP)
	RATLS_MITMDUMP=$(CURDIR)/$(MITM_VENV)/bin/mitmdump $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The whole product on the embedded default: Triton + gateway (sim platform) + verifying clients.
demo: venv
	$(BIN)/python -m gateway.demo

# the same on the simulated Intel TDX platform (quotes through a fake configfs-tsm tree)
demo-tdx: venv
	RATLS_DEMO_PLATFORM=sim-tdx $(BIN)/python -m gateway.demo

# The RA-TLS library alone: issue, verify, refuse; and a real AMD report when the vectors are present.
demo-library: venv
	$(BIN)/python -m ratls.demo

# Keep the stack in the foreground (Ctrl-C stops it) and verify it by hand from another shell.
serve: venv
	@echo "gateway on https://127.0.0.1:8443 (SIMULATED platform). From another shell:"
	@echo "  source .venv/bin/activate"
	@echo "  ratls policy init --from https://127.0.0.1:8443 --sim-dir .demo/sim --out policy.yaml"
	@echo "  ratls verify https://127.0.0.1:8443 --policy policy.yaml"
	@echo "  curl -k --pinnedpubkey \$$(ratls pin https://127.0.0.1:8443 --policy policy.yaml) https://127.0.0.1:8443/v2/health/ready"
	@echo "  metrics: curl http://127.0.0.1:9464/metrics"
	RATLS_SIM_DIR=.demo/sim $(BIN)/ratls serve -c config/gateway.yaml --platform sim

# Native load generators for the data-plane benchmarks (Debian: wrk, nghttp2-client's h2load).
BENCH_TOOLS := $(shell command -v wrk >/dev/null && command -v h2load >/dev/null || echo missing)
bench-tools:
ifeq ($(BENCH_TOOLS),missing)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nghttp2-client >/dev/null; \
	else echo "make bench: install wrk and nghttp2-client (h2load) for the data-plane benchmarks"; exit 2; fi
endif

bench: venv bench-tools
	$(BIN)/python bench/run.py

# Where the default policy's per-request cost goes: one piece taken out at a time, Envoy CPU per request.
bench-attribution: venv bench-tools
	$(BIN)/python bench/run.py --attribution

# Only the DoS-hardening cost: hardened vs unhardened gateway under wrk/h2load, interleaved.
bench-hardening: venv bench-tools
	$(BIN)/python bench/run.py --hardening

# The compose deployment for real: a Docker engine (our own dockerd when none is running), local
# stand-ins for the registry images (Debian base from mmdebstrap, Envoy and Triton from their
# wheels), the gateway image from the Dockerfile without network, and tests from the host.
COMPOSE_TOOLS := $(shell command -v dockerd >/dev/null && command -v docker-compose >/dev/null && \
                   command -v mmdebstrap >/dev/null && command -v curl >/dev/null || echo missing)
compose-tools:
ifeq ($(COMPOSE_TOOLS),missing)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose mmdebstrap curl >/dev/null; \
	else echo "make e2e-compose: install docker-compose (it brings docker.io), mmdebstrap and curl"; exit 2; fi
endif

e2e-compose: venv compose-tools
	RATLS_E2E_COMPOSE=1 $(BIN)/python -m pytest -q -rP -p no:cacheprovider e2e/compose $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(MITM_VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info .demo .wheelhouse
