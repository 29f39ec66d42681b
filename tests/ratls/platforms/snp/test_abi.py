from __future__ import annotations

import uuid

import pytest

from ratls.errors import EvidenceError
from ratls.platforms.snp import abi


def test_tcb_layouts_round_trip() -> None:
    milan = abi.TcbVersion.encode(bl=3, tee=0, snp=8, ucode=115)
    assert milan.to_bytes(8, "little").hex() == "0300000000000873"
    decoded = abi.TcbVersion.decode(milan, turin_layout=False)
    assert decoded.components() == {"bl": 3, "tee": 0, "snp": 8, "ucode": 115}
    turin = abi.TcbVersion.encode(fmc=1, bl=3, tee=2, snp=5, ucode=97)
    assert turin.to_bytes(8, "little").hex() == "0103020500000061"
    assert abi.TcbVersion.decode(turin, turin_layout=True).components() == {
        "bl": 3, "tee": 2, "snp": 5, "ucode": 97, "fmc": 1}


def test_guest_policy_bits() -> None:
    p = abi.GuestPolicy(0xB0000)
    assert p.smt and p.reserved_one and not p.migrate_ma and p.debug
    assert abi.GuestPolicy(0x30000).to_json()["debug"] is False
    assert abi.GuestPolicy(1 << 18).migrate_ma


def test_signer_info() -> None:
    assert abi.SignerInfo(0).signing_key == abi.SigningKey.VCEK
    assert abi.SignerInfo(0x4).signing_key == abi.SigningKey.VLEK
    assert abi.SignerInfo(0x1C).signing_key == abi.SigningKey.NONE
    assert abi.SignerInfo(0x2).mask_chip_key
    with pytest.raises(EvidenceError, match="reserved"):
        abi.SignerInfo(0x8).signing_key


def test_product_from_cpuid() -> None:
    assert abi.product_from_cpuid(0x19, 0x01) == abi.Product.MILAN
    assert abi.product_from_cpuid(0x19, 0x11) == abi.Product.GENOA
    assert abi.product_from_cpuid(0x19, 0xA0) == abi.Product.GENOA
    assert abi.product_from_cpuid(0x1A, 0x02) == abi.Product.TURIN
    assert abi.product_from_cpuid(0x17, 0x31) is None


def test_unknown_version_and_algorithm_refused() -> None:
    fields = abi.ReportFields(report_data=bytes(64), measurement=bytes(48))
    body = abi.build_unsigned_report(fields)
    assert abi.parse_report(bytes(body)).version == 5
    body[0] = 9
    with pytest.raises(EvidenceError, match="version 9"):
        abi.parse_report(bytes(body))
    body = abi.build_unsigned_report(fields)
    body[0x34] = 2
    with pytest.raises(EvidenceError, match="signature algorithm"):
        abi.parse_report(bytes(body))


def test_cert_table_round_trip_and_guid_order() -> None:
    table = abi.encode_cert_table({"vcek": b"V" * 10, "ask": b"A" * 5, "ark": b"R" * 3})
    # RFC 4122 byte order: the GUID string's bytes appear as written.
    assert table[:16] == uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd").bytes
    assert abi.parse_cert_table(table) == {"vcek": b"V" * 10, "ask": b"A" * 5, "ark": b"R" * 3}


def test_cert_table_errors() -> None:
    table = bytearray(abi.encode_cert_table({"vcek": b"V" * 10}))
    with pytest.raises(EvidenceError, match="not terminated"):
        abi.parse_cert_table(b"")
    with pytest.raises(EvidenceError, match="outside the table"):
        abi.parse_cert_table(bytes(table[:24]))
    table[20:24] = (1000).to_bytes(4, "little")
    with pytest.raises(EvidenceError, match="outside the table"):
        abi.parse_cert_table(bytes(table))
    dup = abi.encode_cert_table({"vcek": b"x"})
    entry = dup[:24]
    twice = entry + entry + bytes(24) + b"x"
    twice = bytearray(twice)
    for i in (0, 1):
        twice[i * 24 + 16:i * 24 + 20] = (72).to_bytes(4, "little")
    with pytest.raises(EvidenceError, match="twice"):
        abi.parse_cert_table(bytes(twice))
