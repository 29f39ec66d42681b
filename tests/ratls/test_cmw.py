from __future__ import annotations

import pytest

from ratls import cbor, cmw, der
from ratls.errors import EvidenceError


def sample() -> cmw.CmwCollection:
    return cmw.CmwCollection(cmw.RATLS_COLLECTION_TYPE, {
        "claims": cmw.CmwRecord(cmw.MEDIA_CLAIMS, b"\xa0"),
        "cpu": cmw.CmwRecord("application/x", b"report"),
        "endorsements": cmw.CmwCollection(None, {"vcek": cmw.CmwRecord(cmw.MEDIA_PKIX_CERT, b"der")}),
    })


def test_round_trip_through_extension_value() -> None:
    value = cmw.encode_extension_value(sample())
    assert value[0] == der.TAG_OCTET_STRING
    back = cmw.decode_extension_value(value)
    assert back == sample()
    assert back.record("cpu").value == b"report"
    assert back.collection("endorsements").record("vcek").value == b"der"


def test_json_arm_refused() -> None:
    with pytest.raises(EvidenceError, match="JSON form"):
        cmw.decode_extension_value(der.encode(der.TAG_UTF8_STRING, b"{}"))


@pytest.mark.parametrize(("value", "message"), [
    ([], "record"),
    ({}, "empty"),
    ({"x": ["t"]}, "2 or 3"),
    ({"x": [1, b""]}, "media-type"),
    ({"x": ["t", "text"]}, "byte string"),
    ({1: ["t", b""]}, "label"),
    ({"x": 5}, "neither"),
])
def test_malformed_collections(value: object, message: str) -> None:
    with pytest.raises(EvidenceError, match=message):
        cmw.decode_collection(cbor.encode(value))


def test_missing_entries() -> None:
    coll = cmw.decode_collection(cbor.encode({"cpu": ["t", b""]}))
    with pytest.raises(EvidenceError, match="no 'claims'"):
        coll.record("claims")
