"""Negative cases made by mutating copies of the real vectors: each rejected precisely."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ratls.evidence import Evidence
from ratls.pipeline import verify_evidence
from ratls.platforms.snp.abi import SIGNED_LENGTH
from ratls.platforms.snp.platform import MEDIA_TYPE

from .test_vectors import AT, evidence_for

VECTORS_FOR_FLIPS = ["milan_v2_go-sev-guest", "genoa_v3_azure_trustee", "turin_v5_openanolis-trustee"]


def failures(appraisal) -> dict[str, str]:
    return {c.name: c.detail for c in appraisal.failures}


def test_measurement_flip_breaks_signature(vectors: Path) -> None:
    for name in ("milan_v2_go-sev-guest", "turin_v5_openanolis-trustee"):
        raw = bytearray((vectors / "snp" / name / "report.bin").read_bytes())
        raw[0x90] ^= 1
        got = failures(verify_evidence(evidence_for(vectors, name, raw=bytes(raw)), policy=None, now=AT))
        assert list(got) == ["snp.report.signature"], got


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(VECTORS_FOR_FLIPS), offset=st.integers(0, SIGNED_LENGTH - 1),
       bit=st.integers(0, 7))
def test_any_signed_bit_flip_is_rejected(vectors: Path, name: str, offset: int, bit: int) -> None:
    raw = bytearray((vectors / "snp" / name / "report.bin").read_bytes())
    raw[offset] ^= 1 << bit
    appraisal = verify_evidence(evidence_for(vectors, name, raw=bytes(raw)), policy=None, now=AT)
    assert not appraisal.ok
    got = failures(appraisal)
    # Either the signature no longer verifies, or the header no longer parses.
    assert "snp.report.signature" in got or "evidence.parse" in got, got


def test_signature_bytes_flip_rejected(vectors: Path) -> None:
    raw = bytearray((vectors / "snp" / "milan_v2_trustee" / "report.bin").read_bytes())
    raw[0x2A0] ^= 0x01
    got = failures(verify_evidence(evidence_for(vectors, "milan_v2_trustee", raw=bytes(raw)), policy=None, now=AT))
    assert list(got) == ["snp.report.signature"]


def test_turin_report_with_other_turin_vcek(vectors: Path) -> None:
    ev = Evidence("sev-snp", MEDIA_TYPE, (vectors / "snp/turin_v5_openanolis-trustee/report.bin").read_bytes(),
                  {"vcek": (vectors / "snp/extra_certs/virtee_vcek_turin.der").read_bytes()})
    got = failures(verify_evidence(ev, policy=None, now=AT))
    assert set(got) == {"snp.report.signature", "snp.tcb-match", "snp.hwid-match"}
    for name in ("bl", "tee", "snp", "ucode", "fmc"):
        assert f"{name}: cert" in got["snp.tcb-match"]
    assert "another chip" in got["snp.hwid-match"]


def test_swapped_vcek_from_other_milan_chip(vectors: Path) -> None:
    ev = evidence_for(vectors, "milan_v2_trustee", key=None)
    other = (vectors / "snp/milan_v2_go-sev-guest/vcek.der").read_bytes()
    ev = Evidence(ev.platform, ev.media_type, ev.raw, {"vcek": other})
    got = failures(verify_evidence(ev, policy=None, now=AT))
    assert {"snp.report.signature", "snp.hwid-match", "snp.tcb-match"} <= set(got)


def test_wrong_product_chain(vectors: Path) -> None:
    ev = evidence_for(vectors, "milan_v2_trustee")
    genoa_chain = (vectors / "amd_roots/genoa/cert_chain_vcek.pem").read_bytes()
    ev = Evidence(ev.platform, ev.media_type, ev.raw, {**ev.endorsements, "chain": genoa_chain})
    got = failures(verify_evidence(ev, policy=None, now=AT))
    assert list(got) == ["snp.trust-root"] and "ARK-Genoa" in got["snp.trust-root"]


def test_wrong_product_intermediate_only(vectors: Path) -> None:
    ev = evidence_for(vectors, "milan_v2_trustee")
    genoa_ask = (vectors / "amd_roots/genoa/ask.pem").read_bytes()
    ev = Evidence(ev.platform, ev.media_type, ev.raw, {**ev.endorsements, "ask": genoa_ask})
    got = failures(verify_evidence(ev, policy=None, now=AT))
    assert list(got) == ["snp.chain"] and "SEV-Genoa is not signed by ARK-Milan" in got["snp.chain"]


def test_reported_tcb_mutation_is_tcb_mismatch(vectors: Path) -> None:
    raw = bytearray((vectors / "snp/milan_v2_trustee/report.bin").read_bytes())
    raw[0x180] += 1  # blSPL
    got = failures(verify_evidence(evidence_for(vectors, "milan_v2_trustee", raw=bytes(raw)), policy=None, now=AT))
    assert set(got) == {"snp.report.signature", "snp.tcb-match"}
    assert "bl: cert 3 vs report 4" in got["snp.tcb-match"]


def test_chip_id_mutation_is_hwid_mismatch(vectors: Path) -> None:
    raw = bytearray((vectors / "snp/genoa_v3_azure_trustee/report.bin").read_bytes())
    raw[0x1A0] ^= 0xFF
    got = failures(verify_evidence(evidence_for(vectors, "genoa_v3_azure_trustee", raw=bytes(raw)),
                                   policy=None, now=AT))
    assert set(got) == {"snp.report.signature", "snp.hwid-match"}


def test_truncated_and_oversized_reports(vectors: Path) -> None:
    raw = (vectors / "snp/milan_v2_trustee/report.bin").read_bytes()
    for bad, word in ((raw[:-1], "1183 bytes"), (raw + b"\0", "1185 bytes"), (b"", "0 bytes")):
        got = failures(verify_evidence(evidence_for(vectors, "milan_v2_trustee", raw=bad), policy=None, now=AT))
        assert list(got) == ["evidence.parse"] and word in got["evidence.parse"]


def test_missing_endorsement_key_fails_closed(vectors: Path) -> None:
    raw = (vectors / "snp/milan_v2_trustee/report.bin").read_bytes()
    got = failures(verify_evidence(Evidence("sev-snp", MEDIA_TYPE, raw, {}), policy=None, now=AT))
    assert list(got) == ["snp.endorsement-key"]


def test_vlek_report_with_vcek_is_refused(vectors: Path) -> None:
    ev = evidence_for(vectors, "milan_v3_vlek_aws_trustee")
    vcek = (vectors / "snp/milan_v2_trustee/vcek.der").read_bytes()
    got = failures(verify_evidence(Evidence(ev.platform, ev.media_type, ev.raw, {"vcek": vcek}), policy=None,
                                   now=AT))
    assert "snp.signing-key" in got and "snp.report.signature" in got


def test_garbage_endorsement_key(vectors: Path) -> None:
    ev = evidence_for(vectors, "milan_v2_trustee")
    got = failures(verify_evidence(Evidence(ev.platform, ev.media_type, ev.raw, {"vcek": b"\x30\x03\x02\x01"}),
                                   policy=None, now=AT))
    assert list(got) == ["evidence.parse"] and "X.509" in got["evidence.parse"]
