"""TDX verification against the real vectors: every result their README states, and each
mutation rejected by the check that names it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ratls.appraisal import Appraisal
from ratls.evidence import Evidence
from ratls.pipeline import verify_evidence
from ratls.platforms.tdx.abi import BODY_10_SIZE, HEADER_SIZE, parse_quote
from ratls.platforms.tdx.platform import COLLATERAL_LABEL, MEDIA_TYPE
from ratls.platforms.tdx.verify import INTEL_ROOT_SHA256, fingerprint, shipped_root
from ratls.trust import Trust

from .conftest import DCAP_V4_NOW, DCAP_V5_NOW, GO_V4_NOW


def _verify(quote: bytes, collateral: bytes | None, now: datetime, trust: Trust | None = None) -> Appraisal:
    ends = {COLLATERAL_LABEL: collateral} if collateral is not None else {}
    return verify_evidence(Evidence("tdx", MEDIA_TYPE, quote, ends), policy=None, now=now, trust=trust)


def _failed(a: Appraisal) -> dict[str, str]:
    return {c.name: c.detail for c in a.checks if not c.ok}


@pytest.fixture
def v4(tdx_vectors: Path) -> tuple[bytes, bytes]:
    return ((tdx_vectors / "v4_dcap-qvl/quote.bin").read_bytes(),
            (tdx_vectors / "v4_dcap-qvl/collateral.json").read_bytes())


def test_shipped_root_is_the_vector_root(tdx_vectors: Path) -> None:
    root = shipped_root()
    assert fingerprint(root) == INTEL_ROOT_SHA256
    assert root.public_bytes(__import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"])
                             .Encoding.DER) == (tdx_vectors / "intel_root/Intel_SGX_Root_CA.der").read_bytes()


def test_v4_up_to_date_at_the_pinned_time(v4: tuple[bytes, bytes]) -> None:
    a = _verify(*v4, DCAP_V4_NOW)
    assert a.ok, _failed(a)
    assert a.tcb["status"] == "UpToDate" and a.tcb["advisory_ids"] == []
    assert a.tcb["tcb_eval_data_number"] == 17 and a.tcb["fmspc"] == "B0C06F000000"
    assert a.measurements["mrtd"].startswith("91eb2b44")


def test_v4_collateral_not_yet_valid(v4: tuple[bytes, bytes]) -> None:
    a = _verify(*v4, datetime.fromtimestamp(1750320802, UTC))
    assert "issue date is in the future" in _failed(a)["tdx.collateral"]


def test_v4_collateral_expired_crl(v4: tuple[bytes, bytes]) -> None:
    a = _verify(*v4, datetime(2026, 11, 26, tzinfo=UTC))
    assert "CrlExpired" in _failed(a)["tdx.collateral"] or "expired" in _failed(a)["tdx.collateral"].lower()


def test_v5_outdated_has_no_matching_tcb_level(tdx_vectors: Path) -> None:
    a = _verify((tdx_vectors / "v5_outdated_dcap-qvl/quote.bin").read_bytes(),
                (tdx_vectors / "v5_outdated_dcap-qvl/collateral.json").read_bytes(), DCAP_V5_NOW)
    assert not a.ok
    assert "No matching TCB level found" in _failed(a)["tdx.collateral"]
    # the quote itself is authentic: only the TCB evaluation rejects it
    assert set(_failed(a)) == {"tdx.collateral"}


def test_v5_go_tdx_guest_up_to_date_with_cross_source_collateral(tdx_vectors: Path) -> None:
    a = _verify((tdx_vectors / "v5_go-tdx-guest/quote.bin").read_bytes(),
                (tdx_vectors / "v5_outdated_dcap-qvl/collateral.json").read_bytes(), DCAP_V5_NOW)
    assert a.ok, _failed(a)
    assert a.tcb["status"] == "UpToDate"


def test_v4_go_tdx_guest_rejected_for_low_tee_tcb_svn(tdx_vectors: Path) -> None:
    a = _verify((tdx_vectors / "v4_go-tdx-guest/quote.bin").read_bytes(),
                (tdx_vectors / "v4_go-tdx-guest/collateral_assembled.json").read_bytes(), GO_V4_NOW)
    assert "No matching TCB level found" in _failed(a)["tdx.collateral"]


@pytest.mark.parametrize(("name", "when"), [
    ("v4_trustee/quote.bin", datetime(2024, 1, 1, tzinfo=UTC)),
    ("v4_trustee/quote_6_fmspc00a06d080000.bin", datetime(2025, 10, 20, tzinfo=UTC)),
    ("v5_trustee/quote.bin", datetime(2025, 1, 1, tzinfo=UTC)),
    ("v4_azure_trustee/quote.bin", datetime(2024, 6, 1, tzinfo=UTC)),
    ("v5_go-tdx-guest/quote.bin", datetime(2026, 2, 3, tzinfo=UTC)),
])
def test_signatures_ok_but_no_collateral_fails_closed(tdx_vectors: Path, name: str, when: datetime) -> None:
    a = _verify((tdx_vectors / name).read_bytes(), None, when)
    assert set(_failed(a)) == {"tdx.collateral"}, _failed(a)
    assert "no collateral" in _failed(a)["tdx.collateral"]


def test_collateral_supplied_by_the_verifier_overrides(v4: tuple[bytes, bytes]) -> None:
    quote, collateral = v4
    a = _verify(quote, None, DCAP_V4_NOW, Trust(tdx_collateral=collateral))
    assert a.ok, _failed(a)


# ---- mutations ----

def _flip(raw: bytes, offset: int) -> bytes:
    out = bytearray(raw)
    out[offset] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize("offset", [8, 40, HEADER_SIZE, HEADER_SIZE + 136, HEADER_SIZE + 520, HEADER_SIZE + 583])
def test_any_signed_byte_breaks_the_quote_signature(v4: tuple[bytes, bytes], offset: int) -> None:
    quote, collateral = v4
    a = _verify(_flip(quote, offset), collateral, DCAP_V4_NOW)
    assert "tdx.quote-signature" in _failed(a)


def _sig_offsets(quote: bytes) -> dict[str, int]:
    q = parse_quote(quote)
    sig_start = HEADER_SIZE + BODY_10_SIZE + 4
    qe_report = sig_start + 64 + 64 + 6
    return {"signature": sig_start + 5, "attest_key": sig_start + 64 + 3, "qe_report": qe_report + 10,
            "qe_report_data": qe_report + 320 + 1, "qe_sig": qe_report + 384 + 7,
            "qe_auth": qe_report + 384 + 64 + 2 + (len(q.qe_auth_data) // 2)}


@pytest.mark.parametrize(("field", "check"), [
    ("signature", "tdx.quote-signature"),
    ("attest_key", "tdx.qe-binding"),
    ("qe_report", "tdx.qe-report-signature"),
    ("qe_report_data", "tdx.qe-binding"),
    ("qe_sig", "tdx.qe-report-signature"),
    ("qe_auth", "tdx.qe-binding"),
])
def test_signature_data_mutations_name_the_link(v4: tuple[bytes, bytes], field: str, check: str) -> None:
    quote, collateral = v4
    a = _verify(_flip(quote, _sig_offsets(quote)[field]), collateral, DCAP_V4_NOW)
    assert check in _failed(a), _failed(a)


def _replace_chain(quote: bytes, new_pem: bytes) -> bytes:
    q = parse_quote(quote)
    assert len(new_pem) == len(q.pck_chain_pem)
    start = quote.index(q.pck_chain_pem)
    return quote[:start] + new_pem + quote[start + len(new_pem):]


def test_chain_without_its_root_is_completed_with_the_pinned_root(v4: tuple[bytes, bytes]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    quote, collateral = v4
    q = parse_quote(quote)
    certs = x509.load_pem_x509_certificates(q.pck_chain_pem)
    # a chain that ends in the right root but whose intermediate is another PCK chain's is caught
    # by signature; a chain that omits the root is completed with the pinned one
    trimmed = b"".join(c.public_bytes(Encoding.PEM) for c in certs[:2])
    padded = trimmed + b"\0" * (len(q.pck_chain_pem) - len(trimmed))
    a = _verify(_replace_chain(quote, padded), collateral, DCAP_V4_NOW)
    assert "tdx.pck-chain" not in _failed(a)


def test_pck_leaf_swapped_for_the_intermediate(v4: tuple[bytes, bytes]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    quote, collateral = v4
    q = parse_quote(quote)
    certs = x509.load_pem_x509_certificates(q.pck_chain_pem)
    pem = b"".join(c.public_bytes(Encoding.PEM) for c in (certs[1], certs[1], certs[2]))
    pem = pem[: len(q.pck_chain_pem)] if len(pem) >= len(q.pck_chain_pem) else pem + b"\0" * (
        len(q.pck_chain_pem) - len(pem))
    a = _verify(_replace_chain(quote, pem), collateral, DCAP_V4_NOW)
    assert "tdx.pck-chain" in _failed(a) or "tdx.qe-report-signature" in _failed(a)


def test_pck_chain_byte_flip_is_refused(v4: tuple[bytes, bytes]) -> None:
    quote, collateral = v4
    q = parse_quote(quote)
    start = quote.index(q.pck_chain_pem)
    # a byte inside the base64 of the leaf's signature
    pem_lines = q.pck_chain_pem.split(b"\n")
    offset = start + len(b"\n".join(pem_lines[:10])) + 5
    mutated = bytearray(quote)
    mutated[offset] = ord("A") if mutated[offset] != ord("A") else ord("B")
    a = _verify(bytes(mutated), collateral, DCAP_V4_NOW)
    assert not a.ok
    assert {"tdx.pck-chain", "tdx.qe-report-signature"} & set(_failed(a)), _failed(a)


def test_wrong_root_pinned(v4: tuple[bytes, bytes], sim_chain: object) -> None:
    from ratls.platforms.tdx.verify import TdxTrust, verify_tdx

    quote, collateral = v4
    ark = sim_chain.ark  # type: ignore[attr-defined]
    got = verify_tdx(parse_quote(quote), collateral, TdxTrust(root=ark), DCAP_V4_NOW)
    failed = {c.name: c.detail for c in got.checks if not c.ok}
    assert "not the pinned root" in failed["tdx.pck-chain"]


@pytest.mark.parametrize("field", ["tcb_info", "qe_identity", "pck_crl", "root_ca_crl", "tcb_info_signature",
                                   "qe_identity_signature", "tcb_info_issuer_chain"])
def test_collateral_mutations_are_rejected(v4: tuple[bytes, bytes], field: str) -> None:
    quote, collateral = v4
    doc = json.loads(collateral)
    value = doc[field]
    if field in ("tcb_info", "qe_identity"):
        value = value.replace('"UpToDate"', '"UpToDatf"', 1) if field == "qe_identity" else value.replace(
            '"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":18')
    elif field.endswith("chain"):
        value = value.replace("MII", "MIJ", 1)
    else:
        cut = len(value) // 2
        value = value[:cut] + ("0" if value[cut] != "0" else "1") + value[cut + 1:]
    assert value != doc[field]
    doc[field] = value
    a = _verify(quote, json.dumps(doc).encode(), DCAP_V4_NOW)
    assert "tdx.collateral" in _failed(a), field


def test_collateral_that_is_not_json(v4: tuple[bytes, bytes]) -> None:
    a = _verify(v4[0], b"\xff not json", DCAP_V4_NOW)
    assert "not valid QuoteCollateralV3 JSON" in _failed(a)["tdx.collateral"]


def test_collateral_of_another_platform(tdx_vectors: Path, v4: tuple[bytes, bytes]) -> None:
    other = (tdx_vectors / "v5_outdated_dcap-qvl/collateral.json").read_bytes()
    a = _verify(v4[0], other, DCAP_V4_NOW)
    assert "tdx.collateral" in _failed(a)


def _trustee_collateral(tdx_vectors: Path, *, tamper: bool = False) -> bytes:
    """Trustee's TCB info and QE identity (issued 2025-10) with the only CRLs the vectors have
    (dcap-qvl's, which expired 2025-07): the README's "no full offline run" case."""
    import re

    def body_and_signature(name: str, key: str) -> tuple[str, str]:
        raw = (tdx_vectors / "v4_trustee" / name).read_text()
        match = re.search(r'"' + key + r'"\s*:\s*(\{.*\})\s*,\s*"signature"', raw, re.S)
        assert match is not None
        return match.group(1), json.loads(raw)["signature"]

    doc = json.loads((tdx_vectors / "v4_dcap-qvl/collateral.json").read_text())
    doc["tcb_info"], doc["tcb_info_signature"] = body_and_signature("tcbInfo_00A06D080000.json", "tcbInfo")
    doc["qe_identity"], doc["qe_identity_signature"] = body_and_signature("enclaveIdentity_TD_QE.json",
                                                                          "enclaveIdentity")
    if tamper:
        doc["tcb_info"] = doc["tcb_info"].replace('"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":18')
    return json.dumps(doc).encode()


def test_trustee_tcb_info_signature_verifies_but_the_crls_are_stale(tdx_vectors: Path) -> None:
    quote = (tdx_vectors / "v4_trustee/quote_6_fmspc00a06d080000.bin").read_bytes()
    when = datetime(2025, 11, 1, tzinfo=UTC)
    a = _verify(quote, _trustee_collateral(tdx_vectors), when)
    # TCB info and QE identity signatures pass; the verdict stops at the expired CRLs
    assert "CrlExpired" in _failed(a)["tdx.collateral"] and "\n" not in _failed(a)["tdx.collateral"]
    a = _verify(quote, _trustee_collateral(tdx_vectors, tamper=True), when)
    assert "Signature is invalid for tcb_info" in _failed(a)["tdx.collateral"]


def test_failed_collateral_fetch_is_the_reason_the_check_gives(v4: tuple[bytes, bytes], tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    online = Trust(kds_offline=False, pccs_url=f"http://127.0.0.1:{port}", kds_cache_dir=tmp_path)
    detail = _failed(_verify(v4[0], None, DCAP_V4_NOW, online))["tdx.collateral"]
    assert detail.startswith("no collateral (TCB info, QE identity, CRLs) was carried or supplied, and fetching "
                             f"it failed: fetching TDX collateral from http://127.0.0.1:{port} failed: ")
    assert detail.endswith("(check the PCCS URL and network, or run offline with a cached file)")
