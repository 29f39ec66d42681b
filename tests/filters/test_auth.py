from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from e2e.test_auth import _b64, make_jwt
from filters.auth import decide, parse_auth, verify_jwt
from ratls.errors import ConfigError

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def jwks(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    n = key.public_key().public_numbers()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
                                          "x": _b64(n.x.to_bytes(32, "big")), "y": _b64(n.y.to_bytes(32, "big"))}]}))
    return key, path


def policy(jwks_path: Path):  # type: ignore[no-untyped-def]
    return parse_auth({"api_keys": {"keys": [{"name": "a", "sha256": hashlib.sha256(b"k").hexdigest(),
                                              "models": ["m1"]}]},
                       "jwt": {"issuer": "iss", "audiences": ["aud"], "jwks_file": str(jwks_path)}})


def test_api_key_decisions(jwks) -> None:  # type: ignore[no-untyped-def]
    p = policy(jwks[1])
    assert decide(p, {"x-api-key": "k"}, "m1", None, NOW).allowed
    assert decide(p, {"x-api-key": "k"}, None, None, NOW).allowed  # server metadata names no model
    assert decide(p, {"x-api-key": "k"}, "m2", None, NOW).status == 403
    assert decide(p, {"x-api-key": "nope"}, "m1", None, NOW).status == 401
    assert decide(p, {}, "m1", None, NOW).status == 401
    assert "x-api-key" in decide(p, {"x-api-key": "k"}, "m1", None, NOW).remove_headers


def test_jwt_verification(jwks) -> None:  # type: ignore[no-untyped-def]
    key, path = jwks
    cfg = policy(path).jwt
    exp = int(NOW.timestamp()) + 60
    token = make_jwt(key, {"iss": "iss", "aud": ["aud"], "exp": exp, "models": "m1 m2"})
    assert verify_jwt(token, cfg, NOW)["models"] == "m1 m2"
    head, body, sig = token.split(".")
    tampered = ".".join([head, _b64(json.dumps({"iss": "iss", "aud": "aud", "exp": exp, "models": "*"}).encode()),
                         sig])
    for bad, message in ((tampered, "signature"), ("a.b", "malformed"),
                         (make_jwt(key, {"iss": "other", "aud": "aud", "exp": exp}), "issuer"),
                         (make_jwt(key, {"iss": "iss", "aud": "aud"}), "exp"),
                         (make_jwt(key, {"iss": "iss", "aud": "aud", "exp": exp}, kid="k9"), "no JWKS key")):
        with pytest.raises(ValueError, match=message):
            verify_jwt(bad, cfg, NOW)
    none_alg = _b64(json.dumps({"alg": "none", "kid": "k1"}).encode()) + "." + body + "."
    with pytest.raises(ValueError):
        verify_jwt(none_alg, cfg, NOW)
    d = decide(policy(path), {"authorization": f"Bearer {token}"}, "m2", None, NOW)
    assert d.allowed and d.identity == "jwt:?"


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="never the key"):
        parse_auth({"api_keys": {"keys": [{"name": "a", "sha256": "plaintext-key"}]}})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_auth({"apikeys": {}})
    with pytest.raises(ConfigError, match="cannot read"):
        parse_auth({"jwt": {"issuer": "i", "jwks_file": str(tmp_path / "none.json")}})
    for i, text in enumerate(("[]", '{"keys": 1}', "not json", '"keys"')):  # checked without assert (python -O)
        (tmp_path / f"bad{i}.json").write_text(text)
        with pytest.raises(ConfigError, match="not a JWKS"):
            parse_auth({"jwt": {"issuer": "i", "jwks_file": str(tmp_path / f"bad{i}.json")}})
    assert not parse_auth(None).enabled
