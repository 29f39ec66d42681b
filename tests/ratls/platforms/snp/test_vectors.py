"""Every real SNP vector gives the result its README states (../shared/vectors/snp)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ratls.evidence import Evidence
from ratls.pipeline import verify_evidence
from ratls.platforms.snp.abi import parse_report
from ratls.platforms.snp.platform import MEDIA_TYPE
from ratls.policy import parse_policy

AT = datetime(2026, 11, 1, tzinfo=UTC)  # inside every VCEK's validity
VLEK_AT = datetime(2025, 6, 1, tzinfo=UTC)  # the AWS VLEK expired 2025-12-10

# (directory, report file, key file, version, product or None for v2, signing key)
VECTORS = [
    ("milan_v2_go-sev-guest", "report.bin", "vcek.der", 2, None, "vcek"),
    ("milan_v2_virtee-sev", "report.bin", "vcek.der", 2, None, "vcek"),
    ("milan_v2_trustee", "report.bin", "vcek.der", 2, None, "vcek"),
    ("milan_v3_vlek_aws_trustee", "report.bin", "vlek.der", 3, "milan", "vlek"),
    ("genoa_v3_azure_trustee", "report.bin", "vcek.pem", 3, "genoa", "vcek"),
    ("milan_v5_gcp_teekit", "report.bin", "vcek.pem", 5, "milan", "vcek"),
    ("milan_v5_gcp_teekit", "report_vmpl1_reportdata.bin", "vcek.pem", 5, "milan", "vcek"),
    ("milan_v5_gcp_x25519_teekit", "report.bin", "vcek.pem", 5, "milan", "vcek"),
    ("turin_v5_openanolis-trustee", "report.bin", "vcek.der", 5, "turin", "vcek"),
]


def evidence_for(vectors: Path, name: str, report: str = "report.bin", key: str | None = None,
                 *, raw: bytes | None = None) -> Evidence:
    d = vectors / "snp" / name
    key_path = d / key if key else next(p for p in d.iterdir() if p.name.startswith(("vcek", "vlek")))
    data = raw if raw is not None else (d / report).read_bytes()
    return Evidence("sev-snp", MEDIA_TYPE, data, {"vcek": key_path.read_bytes()})


@pytest.mark.parametrize(("name", "report", "key", "version", "product", "signer"), VECTORS)
def test_vector_authentic(vectors: Path, name: str, report: str, key: str, version: int,
                          product: str | None, signer: str) -> None:
    at = VLEK_AT if signer == "vlek" else AT
    appraisal = verify_evidence(evidence_for(vectors, name, report, key), policy=None, now=at)
    assert appraisal.ok, appraisal.summary()
    names = {c.name for c in appraisal.checks}
    assert {"snp.report.signature", "snp.chain", "snp.tcb-match"} <= names
    assert ("snp.hwid-match" in names) == (signer == "vcek")
    parsed = parse_report((vectors / "snp" / name / report).read_bytes())
    assert parsed.version == version
    assert (parsed.product.value if parsed.product else None) == product
    assert parsed.signer_info.signing_key.value == signer
    assert not appraisal.policy_applied


def test_chain_labels_match_expected_results(vectors: Path) -> None:
    expected = {
        "milan_v2_trustee": "ARK-Milan -> SEV-Milan -> SEV-VCEK",
        "milan_v3_vlek_aws_trustee": "ARK-Milan -> SEV-VLEK-Milan -> SEV-VLEK",
        "genoa_v3_azure_trustee": "ARK-Genoa -> SEV-Genoa -> SEV-VCEK",
        "turin_v5_openanolis-trustee": "ARK-Turin -> SEV-Turin -> SEV-VCEK",
    }
    for name, label in expected.items():
        at = VLEK_AT if "vlek" in name else AT
        appraisal = verify_evidence(evidence_for(vectors, name), policy=None, now=at)
        chain = next(c for c in appraisal.checks if c.name == "snp.chain")
        assert chain.ok and chain.detail.startswith(label), chain.detail


def test_vlek_expired_without_pinned_time(vectors: Path) -> None:
    appraisal = verify_evidence(evidence_for(vectors, "milan_v3_vlek_aws_trustee"), policy=None,
                                now=datetime(2026, 1, 1, tzinfo=UTC))
    assert not appraisal.ok
    (failure,) = appraisal.failures
    assert failure.name == "snp.chain" and "SEV-VLEK is not valid" in failure.detail


def test_vlek_carries_csp_id(vectors: Path) -> None:
    appraisal = verify_evidence(evidence_for(vectors, "milan_v3_vlek_aws_trustee"), policy=None, now=VLEK_AT)
    assert appraisal.evidence["endorsement_key"]["csp_id"] == "CN=cc-us-east-2.amazonaws.com"


def test_turin_layout_and_8_byte_hwid(vectors: Path) -> None:
    report = parse_report((vectors / "snp" / "turin_v5_openanolis-trustee" / "report.bin").read_bytes())
    assert report.reported_tcb.components() == {"bl": 3, "tee": 2, "snp": 5, "ucode": 97, "fmc": 1}
    assert report.chip_id[:8].hex() == "0910b4f884ff4ba9" and not any(report.chip_id[8:])
    appraisal = verify_evidence(evidence_for(vectors, "turin_v5_openanolis-trustee"), policy=None, now=AT)
    hwid = next(c for c in appraisal.checks if c.name == "snp.hwid-match")
    assert hwid.ok and "8 bytes" in hwid.detail


def test_x25519_binding_report_data(vectors: Path) -> None:
    d = vectors / "snp" / "milan_v5_gcp_x25519_teekit"
    values = dict(line.split("=", 1) for line in (d / "binding.txt").read_text().split())
    expected = hashlib.sha512(bytes.fromhex(values["NONCE"]) + bytes.fromhex(values["X25519_KEY"])).digest()
    ok = verify_evidence(evidence_for(vectors, "milan_v5_gcp_x25519_teekit"), policy=None, now=AT,
                         expected_report_data=expected)
    assert ok.ok
    bad = verify_evidence(evidence_for(vectors, "milan_v5_gcp_x25519_teekit"), policy=None, now=AT,
                          expected_report_data=bytes(64))
    assert [c.name for c in bad.failures] == ["binding.report-data"]


def strict_policy(measurement: str) -> dict:
    return {"version": 1, "platforms": ["sev-snp"],
            "sev-snp": {"measurements": [measurement], "guest_policy": {"debug": False, "migrate_ma": False},
                        "vmpl": 0}}


def test_go_sev_guest_debug_vector_rejected_by_strict_policy(vectors: Path) -> None:
    ev = evidence_for(vectors, "milan_v2_go-sev-guest")
    measurement = parse_report(ev.raw).measurement.hex()
    appraisal = verify_evidence(ev, policy=parse_policy(strict_policy(measurement)), now=AT)
    assert [c.name for c in appraisal.failures] == ["policy.snp.guest-policy.debug"]
    assert "allows DEBUG" in appraisal.failures[0].detail and "0xb0000" in appraisal.failures[0].detail


def test_strict_policy_accepts_non_debug_vector(vectors: Path) -> None:
    ev = evidence_for(vectors, "milan_v2_virtee-sev")
    measurement = parse_report(ev.raw).measurement.hex()
    policy = strict_policy(measurement)
    policy["sev-snp"]["min_tcb"] = {"bl": 3, "tee": 0, "snp": 8, "ucode": 115}
    appraisal = verify_evidence(ev, policy=parse_policy(policy), now=AT)
    assert appraisal.ok, appraisal.summary()
    policy["sev-snp"]["min_tcb"] = {"milan": {"snp": 9}}
    low = verify_evidence(ev, policy=parse_policy(policy), now=AT)
    assert [c.name for c in low.failures] == ["policy.snp.min-tcb"]
    assert "snp 8 < 9" in low.failures[0].detail
