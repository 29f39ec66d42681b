"""`ratls cert show`: shows what identifies the launched image on every platform, reads a
server's certificate like `ratls verify` does, and presents the models claim flat."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from ratls import registry
from ratls.cert import build_certificate, generate_key
from ratls.cli import main
from ratls.evidence import Evidence
from ratls.issue import issue_certificate, make_claims
from ratls.platforms.sim.chain import SimChain
from ratls.testing.tls_server import serve_certificate
from ratls.timeutil import utcnow

AZURE_MEDIA = "application/vnd.ratls.azure-vtpm+json"


def show(capsys: pytest.CaptureFixture[str], target: str, *flags: str) -> tuple[int, str, str]:
    code = main(["cert", "show", target, *flags])
    out = capsys.readouterr()
    return code, out.out, out.err


def _issue(tmp_path: Path, platform: str, sim_dir: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    assert main(["cert", "issue", "--platform", platform, "--sim-dir", str(sim_dir), "--out-cert", str(cert),
                 "--out-key", str(key)]) == 0
    return cert, key


def test_snp_measurement_is_shown(capsys, tmp_path: Path, sim_state: Path, sim_chain: SimChain) -> None:
    cert, _ = _issue(tmp_path, "sim", sim_state)
    capsys.readouterr()
    code, out, _ = show(capsys, str(cert), "--json")
    report = json.loads(out)["report"]
    assert code == 0 and report["measurements"] == {"measurement": sim_chain.measurement.hex()}
    assert report["version"] == 5  # the report's other fields stay where they were
    code, out, _ = show(capsys, str(cert))
    assert code == 0 and f"\nmeasurement: {sim_chain.measurement.hex()}\n" in out


def test_tdx_measurements_are_shown(capsys, tmp_path: Path) -> None:
    cert, _ = _issue(tmp_path, "sim-tdx", tmp_path / "sim")
    capsys.readouterr()
    code, out, _ = show(capsys, str(cert), "--json")
    measurements = json.loads(out)["report"]["measurements"]
    assert code == 0 and {"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"} <= set(measurements)


def _azure_cert(tmp_path: Path, platform: str, evidence_json: bytes) -> Path:
    # Recorded Azure evidence in a certificate: its binding does not hold (cert show does not verify).
    key = generate_key()
    now = utcnow()
    claims = make_claims(key, platform=platform, now=now, lifetime=timedelta(hours=1), instance=b"\x00" * 16)
    cert = build_certificate(key, claims.encode(), Evidence(platform, AZURE_MEDIA, evidence_json, {}),
                             not_before=now, not_after=now + timedelta(hours=1), common_name="gw", sans=[])
    path = tmp_path / f"{platform}.pem"
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return path


@pytest.mark.parametrize(("platform", "recorded", "kind", "hardware"), [
    ("azure-snp-vtpm", "azure/snp_genoa_trustee/evidence.json", "sev-snp", {"measurement"}),
    ("azure-tdx-vtpm", "azure/tdx_trustee/evidence-v1.json", "tdx", {"mrtd", "rtmr0"}),
])
def test_azure_vtpm_shows_hardware_measurement_and_pcrs(capsys, tmp_path: Path, vectors: Path, platform: str,
                                                        recorded: str, kind: str, hardware: set[str]) -> None:
    cert = _azure_cert(tmp_path, platform, (vectors / recorded).read_bytes())
    code, out, _ = show(capsys, str(cert), "--json")
    report = json.loads(out)["report"]
    assert code == 0 and hardware <= set(report["measurements"])
    assert {f"pcr{i}" for i in range(24)} <= set(report["measurements"])
    assert report["hcl"]["report_type"] == kind


def test_reads_a_server_like_verify(capsys, tmp_path: Path, sim_state: Path) -> None:
    cert, key = _issue(tmp_path, "sim", sim_state)
    capsys.readouterr()
    _, out, _ = show(capsys, str(cert), "--json")
    expected = json.loads(out)["certificate_sha256"]
    with serve_certificate(cert, key) as port:
        for target in (f"https://127.0.0.1:{port}", f"127.0.0.1:{port}"):
            code, out, err = show(capsys, target, "--json")
            assert code == 0, err
            assert json.loads(out)["certificate_sha256"] == expected


def test_models_claim_is_flat(capsys, tmp_path: Path, sim_state: Path) -> None:
    models = {"manifest": "sha256:" + "aa" * 32,
              "models": {"add_sub": "sha256:" + "bb" * 32, "manifest": "sha256:" + "cc" * 32}}
    issued = issue_certificate(registry.get("sim", state_dir=sim_state), generate_key(), now=utcnow(),
                               models=models)
    cert = tmp_path / "c.pem"
    cert.write_bytes(issued.cert.public_bytes(Encoding.PEM))
    code, out, _ = show(capsys, str(cert), "--json")
    claims = json.loads(out)["claims"]
    assert code == 0
    assert claims["model_manifest"] == models["manifest"]
    assert claims["models"] == models["models"]  # a model called "manifest" is not confused with the manifest
    code, out, _ = show(capsys, str(cert))
    assert '"models": {"add_sub": "sha256:bbbb' in out
