"""The ext_authz service's refusals are JSON whatever the reason says (it can quote what the
client sent, such as a model name with quotes or backslashes)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from envoy.service.auth.v3 import external_auth_pb2

import gateway.authz
from filters.auth import Decision
from gateway.authz import AuthorizationService, denied_body


@pytest.mark.parametrize("reason", ['not allowed to call model \'a"b\'', "not allowed to call model 'c:\\d'",
                                    "line\nbreak", "plain"])
def test_denied_body_is_json_for_any_reason(reason: str) -> None:
    for status, kind in ((401, "unauthenticated"), (403, "forbidden")):
        body = denied_body(Decision(False, status, None, reason))
        assert body.endswith("\n")
        assert json.loads(body) == {"error": f"{kind}: {reason}"}


def test_check_refuses_with_a_json_body(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = 'not allowed to call model \'x"}, "admin": true, "y":"\''
    monkeypatch.setattr(gateway.authz, "decide", lambda *args: Decision(False, 403, "api-key:k", reason))
    service = AuthorizationService(policy=None)  # type: ignore[arg-type]
    answer = asyncio.run(service.Check(external_auth_pb2.CheckRequest(), None))  # type: ignore[arg-type]
    assert answer.denied_response.status.code == 403
    assert json.loads(answer.denied_response.body) == {"error": f"forbidden: {reason}"}
    assert service.denied == 1


def _client_cert_request(not_before: dt.datetime, not_after: dt.datetime) -> external_auth_pb2.CheckRequest:
    import urllib.parse

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "carol")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(not_before).not_valid_after(not_after).sign(key, hashes.SHA256()))
    request = external_auth_pb2.CheckRequest()
    request.attributes.source.certificate = urllib.parse.quote(cert.public_bytes(serialization.Encoding.PEM).decode())
    return request


def test_a_client_certificate_expired_since_the_handshake_identifies_nobody() -> None:
    # a resumed TLS session brings back the client certificate without a new check by Envoy
    now = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    valid = _client_cert_request(now - dt.timedelta(days=1), now + dt.timedelta(days=1))
    assert gateway.authz._subject(valid, now) == "CN=carol"
    expired = _client_cert_request(now - dt.timedelta(days=2), now - dt.timedelta(seconds=1))
    assert gateway.authz._subject(expired, now) is None
    not_yet = _client_cert_request(now + dt.timedelta(seconds=1), now + dt.timedelta(days=1))
    assert gateway.authz._subject(not_yet, now) is None
