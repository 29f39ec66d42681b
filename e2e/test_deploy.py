"""The deployment files users run: docker-compose (validated by docker-compose itself where it
is installed - CI installs Debian's), the gateway image, and the systemd unit."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "e2e" / "docker-compose.yml"
HARDENED = ("--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
            "--model-control-mode=none", "--strict-readiness=true", "--exit-on-error=true",
            "--disable-auto-complete-config")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.mark.parametrize(("gateway", "triton"), [("gateway", "triton"), ("gateway-sim", "triton-sim"),
                                                 ("gateway-azure", "triton-azure")])
def test_compose_structure(gateway: str, triton: str) -> None:
    services = compose()["services"]
    g, t = services[gateway], services[triton]
    assert t["network_mode"] == f"service:{gateway}"  # Triton is reachable on loopback only
    assert "ports" not in t and g["ports"] == ["8443:8443"]
    for flag in HARDENED:
        assert flag in t["command"], flag
    assert any(v.endswith(":/models:ro") for v in t["volumes"]) and any(v.endswith(":/models:ro") for v in g["volumes"])
    assert g["read_only"] is True and t["read_only"] is True
    assert g["cap_drop"] == ["ALL"] and "no-new-privileges:true" in g["security_opt"]
    assert "healthcheck" in g and "healthcheck" in t
    assert g["environment"]["RATLS_GATEWAY__TRITON__MODE"] == "external"
    if gateway == "gateway-sim":
        assert g["environment"]["RATLS_GATEWAY__IDENTITY__PLATFORM"] == "sim" and g["user"] == "10001:10001"
    elif gateway == "gateway-azure":
        assert g["environment"]["RATLS_GATEWAY__IDENTITY__PLATFORM"] == "auto"
        assert g["devices"] == ["/dev/tpmrm0:/dev/tpmrm0"]
    else:
        assert g["environment"]["RATLS_GATEWAY__IDENTITY__PLATFORM"] == "auto"
        assert "/sys/kernel/config:/sys/kernel/config" in g["volumes"]
        assert "devices" not in g  # configfs-tsm serves SNP and TDX; no device node is required


def test_compose_environment_is_valid_gateway_config() -> None:
    from gateway.config import load_config

    env = {k: str(v) for k, v in compose()["services"]["gateway-sim"]["environment"].items()}
    env = {k: v.replace("${GATEWAY_NAME:-localhost}", "localhost") for k, v in env.items()}
    cfg = load_config(ROOT / "config" / "gateway.yaml", env)
    assert cfg.triton.mode == "external" and cfg.identity.platform == "sim"


def test_docker_compose_validates(tmp_path: Path) -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing in CI: .ci/run installs it (apt-get install docker-compose)")
        pytest.skip("docker-compose not installed here (CI installs Debian's to validate the file)")
    for profile in ("sim", "tee", "azure"):
        result = subprocess.run([tool, "-f", str(COMPOSE), "--profile", profile, "config", "-q"],
                                capture_output=True, text=True, timeout=60, cwd=COMPOSE.parent)
        assert result.returncode == 0, result.stderr


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", text, re.M)
    assert "HEALTHCHECK" in text and 'ENTRYPOINT ["ratls", "serve"' in text
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (ROOT / source).exists(), f"COPY source {source} missing"
    assert "envoyproxy/envoy" in text  # Envoy from the upstream image in containers


def test_systemd_unit() -> None:
    unit = (ROOT / "deploy" / "ratls-gateway.service").read_text()
    assert "ExecStart=/opt/ratls/bin/ratls serve -c /etc/ratls/gateway.yaml" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit  # SIGHUP rotates the certificate
    assert "KillSignal=SIGTERM" in unit and "Restart=on-failure" in unit
