from __future__ import annotations

import pytest

from ratls import cbor
from ratls.errors import EvidenceError


@pytest.mark.parametrize(("value", "hex_"), [
    (0, "00"), (23, "17"), (24, "1818"), (255, "18ff"), (256, "190100"), (65536, "1a00010000"),
    (2**32, "1b0000000100000000"), (-1, "20"), (-25, "3818"), (b"", "40"), (b"\x01\x02", "420102"),
    ("a", "6161"), ([], "80"), ([1, [2]], "82018102"), ({}, "a0"), (True, "f5"), (False, "f4"), (None, "f6"),
])
def test_rfc8949_examples(value: object, hex_: str) -> None:
    assert cbor.encode(value).hex() == hex_
    assert cbor.decode(bytes.fromhex(hex_)) == value


def test_map_keys_sorted_bytewise() -> None:
    encoded = cbor.encode({"bb": 1, "a": 2, 10: 3, -1: 4})
    # 10 (0x0a) < -1 (0x20) < "a" (0x61..) < "bb" (0x62..)
    assert encoded.hex() == "a40a03200461610262626201"
    assert cbor.decode(encoded) == {"bb": 1, "a": 2, 10: 3, -1: 4}


@pytest.mark.parametrize(("hex_", "message"), [
    ("1817", "shortest"),           # 23 in a one-byte argument
    ("190017", "shortest"),
    ("5f", "indefinite"),
    ("a2616101616101", "duplicated"),  # {"a":1,"a":1}
    ("a2616201616101", "order"),       # {"b":1,"a":1}
    ("c100", "tags"),
    ("f93c00", "float"),
    ("0000", "trailing"),
    ("62ff", "remain"),
    ("6261ff", "UTF-8"),
    ("9a0fffffff", "array claims"),
    ("a1820102", "keys"),
])
def test_strict_decoder_refuses(hex_: str, message: str) -> None:
    with pytest.raises(EvidenceError, match=message):
        cbor.decode(bytes.fromhex(hex_))


def test_depth_limit() -> None:
    deep = bytes([0x81] * 40) + b"\x00"
    with pytest.raises(EvidenceError, match="nesting"):
        cbor.decode(deep)


def test_unsupported_type_on_encode() -> None:
    with pytest.raises(TypeError):
        cbor.encode(1.5)
