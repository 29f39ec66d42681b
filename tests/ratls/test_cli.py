"""The CLI contract: commands, JSON output and exit codes (0 ok, 1 verdict failed, 2 usage)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ratls.cli import main

from .platforms.snp.test_vectors import AT


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_evidence_verify_authenticity_only(vectors: Path, capsys) -> None:
    d = vectors / "snp/genoa_v3_azure_trustee"
    code, out, _ = run(capsys, "evidence", "verify", "--platform", "snp", "--report", str(d / "report.bin"),
                       "--vcek", str(d / "vcek.pem"), "--at", AT.isoformat(), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["verdict"] == "pass" and doc["policy_applied"] is False and doc["platform"] == "sev-snp"
    assert doc["evidence"]["product"] == "genoa" and doc["tcb"]["reported"]["snp"] == 23


def test_evidence_verify_vlek_pinned_time(vectors: Path, capsys) -> None:
    d = vectors / "snp/milan_v3_vlek_aws_trustee"
    args = ["evidence", "verify", "--platform", "snp", "--report", str(d / "report.bin"), "--vcek", str(d / "vlek.der")]
    assert run(capsys, *args, "--at", "2025-06-01")[0] == 0
    assert run(capsys, *args, "--at", "1767225600")[0] == 1  # 2026-01-01: the VLEK has expired


def test_evidence_verify_policy_rejects_debug(vectors: Path, capsys, tmp_path: Path) -> None:
    d = vectors / "snp/milan_v2_go-sev-guest"
    from ratls.platforms.snp.abi import parse_report
    m = parse_report((d / "report.bin").read_bytes()).measurement.hex()
    policy = tmp_path / "p.yaml"
    policy.write_text(f"version: 1\nplatforms: [sev-snp]\nsev-snp:\n  measurements: ['{m}']\n"
                      "  guest_policy: {debug: false}\n")
    code, out, _ = run(capsys, "evidence", "verify", "--platform", "snp", "--report", str(d / "report.bin"),
                       "--vcek", str(d / "vcek.der"), "--policy", str(policy), "--at", AT.isoformat())
    assert code == 1 and "[FAIL] policy.snp.guest-policy.debug" in out


def test_wrong_chain_via_cli(vectors: Path, capsys) -> None:
    d = vectors / "snp/milan_v2_trustee"
    code, out, _ = run(capsys, "evidence", "verify", "--platform", "snp", "--report", str(d / "report.bin"),
                       "--vcek", str(d / "vcek.der"), "--chain", str(vectors / "amd_roots/genoa/cert_chain_vcek.pem"),
                       "--at", AT.isoformat())
    assert code == 1 and "ARK-Genoa" in out


def test_usage_errors_exit_2(capsys, tmp_path: Path) -> None:
    assert run(capsys, "evidence", "verify", "--platform", "snp", "--report", str(tmp_path / "none"))[0] == 2
    code, _, err = run(capsys, "evidence", "verify", "--platform", "zzz", "--report", "x")
    assert code == 2 and "unknown platform" in err
    code, _, err = run(capsys, "verify", "x.pem", "--policy", str(tmp_path / "none.yaml"))
    assert code == 2 and "cannot read policy" in err
    with pytest.raises(SystemExit) as info:
        main(["evidence", "verify"])
    assert info.value.code == 2
    bad_time = ["evidence", "verify", "--platform", "snp", "--report", __file__, "--at", "yesterday"]
    code, _, err = run(capsys, *bad_time)
    assert code == 2 and "ISO 8601" in err


def test_issue_show_policy_init_verify_round_trip(capsys, tmp_path: Path, sim_state: Path) -> None:
    cert, key, policy = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "p.yaml"
    code, _, err = run(capsys, "cert", "issue", "--platform", "sim", "--sim-dir", str(sim_state),
                       "--out-cert", str(cert), "--out-key", str(key), "--san", "gw.example", "--lifetime", "2h")
    assert code == 0 and "SIMULATED" in err
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    code, out, _ = run(capsys, "cert", "show", str(cert), "--json")
    shown = json.loads(out)
    assert code == 0 and shown["claims"]["platform"] == "sim" and "gw.example" in shown["sans"]
    assert shown["report"]["version"] == 5
    code, out, err = run(capsys, "policy", "init", "--from", str(cert), "--out", str(policy))
    assert code == 0 and "trust_on_first_use: true" in policy.read_text()
    code, out, _ = run(capsys, "verify", str(cert), "--policy", str(policy), "--json")
    assert code == 0 and json.loads(out)["verdict"] == "pass"


def test_sim_cert_rejected_by_policy_without_simulation(capsys, tmp_path: Path, sim_state: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    run(capsys, "cert", "issue", "--platform", "sim", "--sim-dir", str(sim_state), "--out-cert", str(cert),
        "--out-key", str(key))
    strict = Path(__file__).resolve().parents[2] / "config/policies/snp-strict.yaml"
    code, out, _ = run(capsys, "verify", str(cert), "--policy", str(strict))
    assert code == 1 and "SIMULATED" in out and "does not allow simulation" in out


def test_encrypted_key_output(capsys, tmp_path: Path, sim_state: Path, monkeypatch) -> None:
    monkeypatch.setenv("RATLS_TEST_PASS", "s3cret")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    code, _, _ = run(capsys, "cert", "issue", "--platform", "sim", "--sim-dir", str(sim_state), "--out-cert",
                     str(cert), "--out-key", str(key), "--key-passphrase-env", "RATLS_TEST_PASS")
    assert code == 0 and b"ENCRYPTED" in key.read_bytes()


def test_cert_show_truncated(capsys, tmp_path: Path, sim_state: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    run(capsys, "cert", "issue", "--platform", "sim", "--sim-dir", str(sim_state), "--out-cert", str(cert),
        "--out-key", str(key))
    cert.write_bytes(cert.read_bytes()[:300])
    code, _, err = run(capsys, "cert", "show", str(cert))
    assert code == 2 and "certificate" in err


def test_snp_issue_outside_a_cvm_explains(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "cert", "issue", "--platform", "snp", "--out-cert", str(tmp_path / "c"),
                       "--out-key", str(tmp_path / "k"))
    assert code == 2 and "no SEV-SNP guest interface" in err and "--platform sim" in err




def test_evidence_verify_tdx_with_collateral(vectors: Path, capsys) -> None:
    d = vectors / "tdx/v4_dcap-qvl"
    args = ["evidence", "verify", "--platform", "tdx", "--report", str(d / "quote.bin"), "--json"]
    code, out, _ = run(capsys, *args, "--collateral", str(d / "collateral.json"), "--at", "1752919234")
    doc = json.loads(out)
    assert code == 0 and doc["platform"] == "tdx" and doc["tcb"]["status"] == "UpToDate"
    code, out, _ = run(capsys, *args, "--at", "1752919234")  # no collateral: fail closed
    assert code == 1 and any(c["name"] == "tdx.collateral" and not c["ok"] for c in json.loads(out)["checks"])


def test_evidence_verify_tdx_outdated_and_debug(vectors: Path, capsys, tmp_path: Path) -> None:
    d = vectors / "tdx/v5_outdated_dcap-qvl"
    code, out, _ = run(capsys, "evidence", "verify", "--platform", "tdx", "--report", str(d / "quote.bin"),
                       "--collateral", str(d / "collateral.json"), "--at", "1774003274")
    assert code == 1 and "No matching TCB level found" in out
    from ratls.platforms.tdx.abi import parse_quote
    debug = vectors / "tdx/v4_trustee/quote.bin"
    policy = tmp_path / "p.yaml"
    mrtd = parse_quote(debug.read_bytes()).body.mr_td.hex()
    policy.write_text(f"version: 1\nplatforms: [tdx]\ntdx:\n  mrtd: ['{mrtd}']\n  debug: false\n")
    code, out, _ = run(capsys, "evidence", "verify", "--platform", "tdx", "--report", str(debug),
                       "--policy", str(policy), "--at", "2024-01-01")
    assert code == 1 and "[FAIL] policy.tdx.debug" in out


def test_evidence_verify_azure_vtpm(vectors: Path, capsys) -> None:
    d = vectors / "azure/snp_genoa_trustee"
    code, out, _ = run(capsys, "evidence", "verify", "--platform", "azure-snp-vtpm", "--report",
                       str(d / "evidence.json"), "--at", "2025-06-01", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["measurements"]["pcr0"] and doc["evidence"]["product"] == "genoa"
    d = vectors / "azure/snp_milan_trustee"
    code, out, err = run(capsys, "evidence", "verify", "--platform", "azure-snp-vtpm", "--report",
                         str(d / "hcl_report.bin"), "--vcek", str(d / "vcek_ask_ark.pem"), "--at", "2025-06-01")
    # a bare HCL report is not the evidence: bad input (exit 2), not a verdict
    assert code == 2 and out == "" and "Azure evidence is not JSON" in err


def test_sim_tdx_issue_init_verify(capsys, tmp_path: Path) -> None:
    cert, key, policy = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "p.yaml"
    assert run(capsys, "cert", "issue", "--platform", "sim-tdx", "--sim-dir", str(tmp_path / "sim"),
               "--out-cert", str(cert), "--out-key", str(key))[0] == 0
    assert run(capsys, "policy", "init", "--from", str(cert), "--out", str(policy))[0] == 0
    assert "\ntdx:" in policy.read_text() and "\nsev-snp:" not in policy.read_text()
    code, out, _ = run(capsys, "verify", str(cert), "--policy", str(policy), "--json")
    assert code == 0 and json.loads(out)["platform"] == "sim-tdx"
    code, out, _ = run(capsys, "sim", "root", "--platform", "sim-tdx", "--sim-dir", str(tmp_path / "sim"))
    assert json.loads(out)["root_sha256"] in policy.read_text()
    code, out, _ = run(capsys, "cert", "show", str(cert), "--json")
    shown = json.loads(out)
    assert code == 0 and shown["evidence"]["media_type"] == "application/vnd.intel.tdx.quote"
    assert shown["evidence"]["endorsements"] == ["tdx-collateral"]
    assert shown["report"]["measurements"]["mrtd"] in policy.read_text()


def test_tdx_issue_outside_a_tdx_guest_explains(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "cert", "issue", "--platform", "tdx", "--pccs-url", "none",
                       "--out-cert", str(tmp_path / "c.pem"), "--out-key", str(tmp_path / "k.pem"))
    assert code == 2 and "configfs-tsm is not available" in err
    assert not (tmp_path / "c.pem").exists()


def test_policy_init_refuses_a_debuggable_guest(capsys, tmp_path: Path, sim_state: Path) -> None:
    """Trust on first use copies measurements, never a weakening: a guest the host can debug
    gets no starting policy (before, it got 'debug: true' copied from what it showed)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from ratls.cert import generate_key
    from ratls.evidence import Evidence
    from ratls.issue import issue_certificate
    from ratls.platforms.sim.platform import SimPlatform
    from ratls.timeutil import utcnow

    class DebugGuest(SimPlatform):
        def collect(self, report_data: bytes) -> Evidence:
            chain = self.chain
            report = chain.sign_report(chain.report_fields(report_data, policy=0x30000 | 1 << 19))  # DEBUG
            return Evidence(self.name, self.media_type, report, chain.endorsements())

    cert, policy = tmp_path / "c.pem", tmp_path / "p.yaml"
    issued = issue_certificate(DebugGuest(state_dir=sim_state), generate_key("p256"), now=utcnow())
    cert.write_bytes(issued.cert.public_bytes(Encoding.PEM))
    code, _, err = run(capsys, "policy", "init", "--from", str(cert), "--sim-dir", str(sim_state),
                       "--out", str(policy))
    assert code == 1 and "[FAIL] policy.snp.guest-policy.debug" in err and not policy.exists()
