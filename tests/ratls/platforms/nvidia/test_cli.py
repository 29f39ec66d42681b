"""``ratls evidence verify --platform nvidia-gpu`` on NVIDIA's own evidence and RIMs, and the
GPU parts of ``cert issue``, ``cert show``, ``verify`` and ``policy init`` on the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ratls.cli import main

GO_NONCE = "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e"
TRUSTEE_NONCE = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
RIMS = "nv-local-gpu-verifier-2.7.3/rims"


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["evidence", "verify", *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip().startswith("{") else {}


def go_args(v: Path, *, chain: str = "gpuAkCertChain.txt", nonce: str = GO_NONCE) -> list[str]:
    return ["--platform", "nvidia-gpu", "--report", str(v / "go-nvtrust/attestationReport.txt"),
            "--chain", str(v / "go-nvtrust" / chain), "--nonce", nonce]


def rims(v: Path, vbios: str = "1010_0200_882_96005E0001_test_no_gpu.swidtag") -> list[str]:
    return ["--driver-rim", str(v / RIMS / "Driver_RIM_test_no_gpu.swidtag"), "--vbios-rim", str(v / RIMS / vbios)]


def test_full_positive_with_nvidia_test_rims(nvidia_vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = verify(capsys, *go_args(nvidia_vectors), *rims(nvidia_vectors), "--at", "2024-06-01T00:00:00Z")
    assert code == 0 and doc["verdict"] == "pass", doc.get("failures")
    assert doc["devices"]["gpu0"]["measurements"] == "match" and doc["devices"]["gpu0"]["driver"] == "545.00"


def test_the_same_rims_today_fail_on_their_expired_signers(nvidia_vectors: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = verify(capsys, *go_args(nvidia_vectors), *rims(nvidia_vectors), "--at", "2026-12-01T00:00:00Z")
    assert code == 1 and {"gpu0.driver-rim.chain", "gpu0.vbios-rim.chain"} <= set(doc["failures"])


def test_prod_vbios_rim_mismatches_at_nvidias_indices(nvidia_vectors: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    prod = rims(nvidia_vectors, "1010_0200_882_96005E0001_PROD.swidtag")
    code, doc = verify(capsys, *go_args(nvidia_vectors), *prod, "--at", "2024-06-01T00:00:00Z")
    assert code == 1 and doc["failures"] == ["gpu0.measurements"]
    detail = next(c["detail"] for c in doc["checks"] if c["name"] == "gpu0.measurements")
    assert all(f"{i}" in detail for i in (1, 2, 3, 9))


def test_authenticity_only_without_rims(nvidia_vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = verify(capsys, *go_args(nvidia_vectors))
    assert code == 0 and doc["devices"]["gpu0"]["measurements"] == "not compared (no RIMs)"
    assert not doc["policy_applied"]
    code, doc = verify(capsys, *go_args(nvidia_vectors, chain="invalidCertChain.txt"))
    assert code == 1 and doc["failures"] == ["gpu0.chain"]
    code, doc = verify(capsys, *go_args(nvidia_vectors, nonce="00" * 32))
    assert code == 1 and doc["failures"] == ["gpu0.nonce"]


def test_a_report_with_a_trailing_byte_is_a_verdict_not_bad_input(nvidia_vectors: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    t = nvidia_vectors / "hopper_trustee"
    nonce = "87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fec"
    code, doc = verify(capsys, "--platform", "nvidia", "--report", str(t / "hopper_coco_report1.txt"),
                       "--chain", str(t / "hopper_coco_certs1.txt"), "--nonce", nonce)
    assert code == 1 and doc["failures"] == ["gpu0.parse"]


def test_policy_appraises_raw_gpu_evidence(nvidia_vectors: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"version": 1, "platforms": ["sev-snp"], "nvidia-gpu": {
        "driver_versions": ["545.00"], "vbios_versions": ["96.00.5e.00.01"], "require_cc": False,
        "allow_devtools": True}}))
    code, doc = verify(capsys, *go_args(nvidia_vectors), *rims(nvidia_vectors), "--at", "2024-06-01T00:00:00Z",
                       "--policy", str(policy))
    assert code == 0, doc["failures"]
    policy.write_text(yaml.safe_dump({"version": 1, "platforms": ["sev-snp"], "nvidia-gpu": {
        "vbios_versions": ["96.00.9f.00.01"]}}))
    code, doc = verify(capsys, *go_args(nvidia_vectors), *rims(nvidia_vectors), "--at", "2024-06-01T00:00:00Z",
                       "--policy", str(policy))
    # raw SPDM evidence does not say whether CC mode is on (the gateway's claims do): fail closed
    assert code == 1 and set(doc["failures"]) == {"policy.nvidia-gpu.gpu0.vbios", "policy.nvidia-gpu.gpu0.cc-mode",
                                                  "policy.nvidia-gpu.gpu0.devtools"}


@pytest.mark.parametrize(("args", "words"), [
    (["--nonce", "abc"], "--nonce"), (["--nonce", "00" * 16], "32"), ([], "--nonce is required"),
])
def test_bad_gpu_input_is_exit_2(nvidia_vectors: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                 words: str) -> None:
    base = ["evidence", "verify", "--platform", "nvidia-gpu", "--report",
            str(nvidia_vectors / "go-nvtrust/attestationReport.txt"), "--chain",
            str(nvidia_vectors / "go-nvtrust/gpuAkCertChain.txt")]
    assert main([*base, *args]) == 2 and words in capsys.readouterr().err


def test_not_a_report_or_not_a_chain_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.txt"
    junk.write_text("this is not a report\n")
    assert main(["evidence", "verify", "--platform", "nvidia-gpu", "--report", str(junk), "--chain", str(junk),
                 "--nonce", "00" * 32]) == 2
    assert "report" in capsys.readouterr().err


def test_simulated_gpu_through_the_cli(tmp_path: Path, sim_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    assert main(["cert", "issue", "--platform", "sim", "--sim-dir", str(sim_state), "--sim-gpus", "2",
                 "--out-cert", str(cert), "--out-key", str(key)]) == 0
    capsys.readouterr()
    assert main(["cert", "show", str(cert), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert set(shown["devices"]) == {"gpu0", "gpu1"} and shown["devices"]["gpu0"]["simulated"] is True
    assert shown["devices"]["gpu0"]["driver"] and "chain" in shown["devices"]["gpu0"]["endorsements"]
    assert main(["cert", "show", str(cert)]) == 0 and "SIMULATED GPU" in capsys.readouterr().out
    out = tmp_path / "policy.yaml"
    rims = tmp_path / "rims"
    assert main(["sim", "gpu", "--sim-dir", str(sim_state), "--rims-out", str(rims)]) == 0
    capsys.readouterr()
    assert main(["policy", "init", "--from", str(cert), "--sim-dir", str(sim_state), "--rim-dir", str(rims),
                 "--out", str(out)]) == 0
    written = yaml.safe_load(out.read_text())
    assert written["nvidia-gpu"]["count"] == 2 and written["nvidia-gpu"]["vbios_versions"] == ["96.00.9f.00.01"]
    assert len(written["simulated"]["root_sha256"]) == 3  # the CPU's and the GPU's two roots
    capsys.readouterr()
    # offline: the RIMs the gateway would serve, from the simulator, in a RIM directory
    assert main(["verify", str(cert), "--policy", str(out), "--json"]) == 1
    assert "policy.nvidia-gpu.gpu0.rim-match" in json.loads(capsys.readouterr().out)["failures"]
    rims = tmp_path / "rims"
    assert main(["sim", "gpu", "--sim-dir", str(sim_state), "--rims-out", str(rims)]) == 0
    assert len(json.loads(capsys.readouterr().out)["rims"]) == 2 and len(list(rims.glob("*.xml"))) == 2
    assert main(["verify", str(cert), "--policy", str(out), "--rim-dir", str(rims), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "pass" and set(doc["devices"]) == {"gpu0", "gpu1"}
    written["nvidia-gpu"]["driver_versions"] = ["550.90.07"]
    out.write_text(yaml.safe_dump(written))
    assert main(["verify", str(cert), "--policy", str(out), "--rim-dir", str(rims)]) == 1


def test_policy_explain_and_diff_name_the_gpu_rules(tmp_path: Path, sim_state: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cert, rims, out = tmp_path / "c.pem", tmp_path / "rims", tmp_path / "p.yaml"
    assert main(["cert", "issue", "--platform", "sim", "--sim-dir", str(sim_state), "--sim-gpus", "1",
                 "--out-cert", str(cert), "--out-key", str(tmp_path / "k.pem")]) == 0
    assert main(["sim", "gpu", "--sim-dir", str(sim_state), "--rims-out", str(rims)]) == 0
    assert main(["policy", "init", "--from", str(cert), "--sim-dir", str(sim_state), "--rim-dir", str(rims),
                 "--out", str(out)]) == 0
    written = yaml.safe_load(out.read_text())
    written["nvidia-gpu"]["vbios_versions"] = ["96.00.74.00.20"]
    out.write_text(yaml.safe_dump(written))
    capsys.readouterr()
    assert main(["policy", "explain", str(out)]) == 0
    text = capsys.readouterr().out
    assert "nvidia-gpu.vbios_versions: VBIOS 96.00.74.00.20" in text and "nvidia-gpu.required" in text
    assert main(["policy", "diff", "--policy", str(out), str(cert), "--rim-dir", str(rims), "--json"]) == 1
    diff = json.loads(capsys.readouterr().out)
    row = next(d for d in diff["differences"] if d["check"] == "policy.nvidia-gpu.gpu0.vbios")
    assert row["policy_key"] == "nvidia-gpu.vbios_versions" and row["actual"] == "96.00.9f.00.01"
    assert row["expected"] == ["96.00.74.00.20"]
