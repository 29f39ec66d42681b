from __future__ import annotations

import struct
from pathlib import Path

import pytest

from ratls.errors import EvidenceError
from ratls.platforms.tdx.abi import BODY_10_SIZE, BODY_15_SIZE, HEADER_SIZE, parse_quote, td_report_body_bytes

QUOTES = ["v4_dcap-qvl/quote.bin", "v4_go-tdx-guest/quote.bin", "v4_trustee/quote.bin",
          "v4_trustee/quote_6_fmspc00a06d080000.bin", "v4_azure_trustee/quote.bin", "v5_go-tdx-guest/quote.bin",
          "v5_outdated_dcap-qvl/quote.bin", "v5_trustee/quote.bin"]


@pytest.mark.parametrize("name", QUOTES)
def test_every_vector_parses(tdx_vectors: Path, name: str) -> None:
    raw = (tdx_vectors / name).read_bytes()
    q = parse_quote(raw)
    assert q.header.version == int(name[1])
    assert q.header.tee_type == 0x81
    assert q.pck_chain_pem.count(b"BEGIN CERTIFICATE") == 3
    body = BODY_10_SIZE if q.header.version == 4 else BODY_15_SIZE
    assert len(q.signed) == HEADER_SIZE + body + (0 if q.header.version == 4 else 6)
    assert td_report_body_bytes(q.body) == q.signed[-body:]


def test_v4_fields_match_dcap_qvl_reference(tdx_vectors: Path) -> None:
    q = parse_quote((tdx_vectors / "v4_dcap-qvl/quote.bin").read_bytes())
    assert q.body.mr_td.hex().startswith("91eb2b44d141d4ec")
    assert q.body.rtmr[2].hex().startswith("d833feef2cd94514")
    assert q.body.tee_tcb_svn.hex() == "06010300000000000000000000000000"
    assert q.body.xfam.hex() == "e702060000000000"
    assert not q.body.debug and q.body.sept_ve_disable
    assert q.trailing == 70  # padding after the signature data is tolerated and reported
    m = q.measurements()
    assert set(m) == {"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "mrowner", "mrownerconfig", "mrseam"}


def test_v5_tdx15_body_fields(tdx_vectors: Path) -> None:
    q = parse_quote((tdx_vectors / "v5_go-tdx-guest/quote.bin").read_bytes())
    assert q.body_type == 3 and q.body_name == "TDX 1.5"
    assert q.body.tee_tcb_svn2 is not None and len(q.body.mr_service_td or b"") == 48


def test_debug_td_is_visible(tdx_vectors: Path) -> None:
    assert parse_quote((tdx_vectors / "v4_trustee/quote.bin").read_bytes()).body.debug


@pytest.mark.parametrize("cut", [0, 1, 47, 48, 100, 631, 632, 636, 700, 1100, 1200])
def test_truncation_names_the_field(tdx_vectors: Path, cut: int) -> None:
    raw = (tdx_vectors / "v4_dcap-qvl/quote.bin").read_bytes()
    with pytest.raises(EvidenceError, match="truncated"):
        parse_quote(raw[:cut])


def test_truncated_pck_chain_is_refused(tdx_vectors: Path) -> None:
    q = parse_quote((tdx_vectors / "v4_dcap-qvl/quote.bin").read_bytes())
    end = len(q.raw) - q.trailing
    with pytest.raises(EvidenceError, match="truncated"):
        parse_quote(q.raw[: end - 10])


@pytest.mark.parametrize(("offset", "value", "message"), [
    (0, struct.pack("<H", 3), "version 3"),
    (2, struct.pack("<H", 3), "attestation key type 3"),
    (4, struct.pack("<I", 0), "TEE type is 0x0"),
])
def test_header_fields_are_checked(tdx_vectors: Path, offset: int, value: bytes, message: str) -> None:
    raw = bytearray((tdx_vectors / "v4_dcap-qvl/quote.bin").read_bytes())
    raw[offset:offset + len(value)] = value
    with pytest.raises(EvidenceError, match=message):
        parse_quote(bytes(raw))


def test_v5_body_descriptor_is_checked(tdx_vectors: Path) -> None:
    raw = bytearray((tdx_vectors / "v5_trustee/quote.bin").read_bytes())
    bad_type = raw.copy()
    bad_type[48:50] = struct.pack("<H", 9)
    with pytest.raises(EvidenceError, match="body type 9"):
        parse_quote(bytes(bad_type))
    bad_size = raw.copy()
    bad_size[50:54] = struct.pack("<I", 584)
    with pytest.raises(EvidenceError, match="declares 584"):
        parse_quote(bytes(bad_size))


def test_wrong_certification_data_type(tdx_vectors: Path) -> None:
    raw = bytearray((tdx_vectors / "v4_dcap-qvl/quote.bin").read_bytes())
    cert_type_at = HEADER_SIZE + BODY_10_SIZE + 4 + 128
    raw[cert_type_at:cert_type_at + 2] = struct.pack("<H", 5)
    with pytest.raises(EvidenceError, match="expected 6"):
        parse_quote(bytes(raw))


def test_not_bytes_and_oversize() -> None:
    with pytest.raises(EvidenceError):
        parse_quote("quote")  # type: ignore[arg-type]
    with pytest.raises(EvidenceError, match="refusing"):
        parse_quote(bytes(2 << 20))
