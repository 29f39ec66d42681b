from __future__ import annotations

import hashlib

import pytest

from ratls import cbor
from ratls.claims import BINDING_PREFIX, Claims, decode_claims, report_data_for
from ratls.errors import EvidenceError


def sample(**kw) -> Claims:
    base = dict(pubkey_sha256=bytes(32), iat=100, exp=200, platform="sim", instance=b"i" * 16,
                models={"manifest": "sha256:" + "0" * 64, "models": {"m": "sha256:" + "1" * 64}},
                config="sha256:" + "2" * 64)
    base.update(kw)
    return Claims(**base)


def test_binding_is_exactly_the_profile() -> None:
    encoded = sample().encode()
    assert report_data_for(encoded) == hashlib.sha512(b"ratls/1 claims\x00" + encoded).digest()
    assert BINDING_PREFIX == b"ratls/1 claims\x00"
    assert len(report_data_for(encoded)) == 64


def test_deterministic_and_round_trip() -> None:
    a = sample()
    assert a.encode() == sample().encode()
    back = decode_claims(a.encode())
    assert back == a
    assert back.to_json()["pubkey-hash"] == [1, "00" * 32]


def test_unknown_keys_are_kept_forward_compatible() -> None:
    m = sample().to_map()
    m["future-claim"] = 7
    assert decode_claims(cbor.encode(m)).extra == {"future-claim": 7}


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda m: m.pop("pubkey-hash"), "pubkey-hash' is missing"),
    (lambda m: m.__setitem__("pubkey-hash", [2, bytes(32)]), "pubkey-hash"),
    (lambda m: m.__setitem__("pubkey-hash", [1, bytes(31)]), "pubkey-hash"),
    (lambda m: m.__setitem__("profile", "ratls/2"), "not supported"),
    (lambda m: m.__setitem__("exp", 50), "not after"),
    (lambda m: m.__setitem__("iat", True), "wrong type"),
    (lambda m: m.__setitem__("nonce", b"x"), "nonce"),
    (lambda m: m.__setitem__("models", [1]), "models"),
    (lambda m: m.__setitem__("config", 5), "config"),
])
def test_malformed_claims(mutate, message: str) -> None:
    m = sample().to_map()
    mutate(m)
    with pytest.raises(EvidenceError, match=message):
        decode_claims(cbor.encode(m))


def test_non_map_claims() -> None:
    with pytest.raises(EvidenceError, match="map"):
        decode_claims(cbor.encode([1]))
