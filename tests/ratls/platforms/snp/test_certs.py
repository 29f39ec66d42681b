from __future__ import annotations

from pathlib import Path

import pytest

from ratls.errors import EvidenceError
from ratls.platforms.snp.certs import decode_hwid, endorsement_key_info, load_certificate


def test_extension_parsing(vectors: Path) -> None:
    info = endorsement_key_info(load_certificate((vectors / "snp/turin_v5_openanolis-trustee/vcek.der").read_bytes(),
                                                 "vcek"))
    assert info.kind == "vcek" and info.product_name == "Turin" and info.struct_version == 1
    assert info.tcb() == {"bl": 3, "tee": 2, "snp": 5, "ucode": 97, "fmc": 1}
    assert info.hwid == bytes.fromhex("0910b4f884ff4ba9")
    vlek = endorsement_key_info(load_certificate((vectors / "snp/milan_v3_vlek_aws_trustee/vlek.der").read_bytes(),
                                                 "vlek"))
    assert vlek.kind == "vlek" and vlek.hwid is None and vlek.csp_id == "CN=cc-us-east-2.amazonaws.com"


def test_hwid_legacy_and_der_encodings(vectors: Path) -> None:
    legacy = endorsement_key_info(load_certificate(
        (vectors / "snp/extra_certs/trustee_vcek_invalid_legacy.der").read_bytes(), "legacy"))
    new = endorsement_key_info(load_certificate(
        (vectors / "snp/extra_certs/trustee_vcek_invalid_new.der").read_bytes(), "new"))
    assert legacy.hwid is not None and len(legacy.hwid) == 64
    assert new.hwid is not None and len(new.hwid) == 64
    assert decode_hwid(b"\x04\x08" + b"A" * 8) == b"A" * 8
    assert decode_hwid(b"A" * 64) == b"A" * 64


def test_unreadable_certificate() -> None:
    with pytest.raises(EvidenceError, match="not a readable X.509"):
        load_certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "vcek")
    with pytest.raises(EvidenceError, match="not a readable X.509"):
        load_certificate(b"\x30\x82\x01", "vcek")
