"""Envoy ext_authz (gRPC, v3) backed by filters.auth: only compiled in when client
authentication is configured. Served on a 0600 unix socket; fails closed (Envoy is told
failure_mode_allow: false, so an unreachable service denies)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.parse

import grpc
from cryptography import x509
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2

from filters.auth import AuthPolicy, Decision, decide
from filters.compile import FIELD_NS
from ratls.timeutil import utcnow
from triton_backend.catalog import classify_http

log = logging.getLogger("ratls.gateway.authz")


def denied_body(decision: Decision) -> str:
    """The JSON a refused client reads. The reason may quote what the client sent (a model name),
    so it is encoded by json.dumps, never pasted into a JSON text."""
    kind = "unauthenticated" if decision.status == 401 else "forbidden"
    return json.dumps({"error": f"{kind}: {decision.reason}"}, separators=(",", ":")) + "\n"


def _model_from(request: external_auth_pb2.CheckRequest) -> str | None:
    http = request.attributes.request.http
    if http.headers.get("content-type", "").startswith("application/grpc"):
        fields = request.attributes.metadata_context.filter_metadata.get(FIELD_NS)
        if fields is None:
            return None
        for name in ("model_name", "name"):
            value = fields.fields.get(name)
            if value is not None and value.list_value.values:
                return value.list_value.values[0].string_value
        return None
    found = classify_http(http.method, http.path.split("?", 1)[0])
    if found is None:
        return None
    return found[1].groupdict().get("model")


def _subject(request: external_auth_pb2.CheckRequest, now: dt.datetime) -> str | None:
    pem = request.attributes.source.certificate
    if not pem:
        return None
    try:
        cert = x509.load_pem_x509_certificate(urllib.parse.unquote(pem).encode())
    except ValueError:
        return None
    # Envoy checked the certificate at the handshake; a resumed TLS session brings it back
    # without a new check, so one that has expired since identifies nobody.
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return None
    return cert.subject.rfc4514_string()


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, policy: AuthPolicy) -> None:
        self.policy = policy
        self.allowed = 0
        self.denied = 0

    async def Check(self, request: external_auth_pb2.CheckRequest,  # noqa: N802 - gRPC method name
                    context: grpc.aio.ServicerContext) -> external_auth_pb2.CheckResponse:
        headers = {k.lower(): v for k, v in request.attributes.request.http.headers.items()}
        now = utcnow()
        decision = decide(self.policy, headers, _model_from(request), _subject(request, now), now)
        if decision.allowed:
            self.allowed += 1
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.OK),
                # Credentials stop here: Triton never sees them.
                ok_response=external_auth_pb2.OkHttpResponse(headers_to_remove=decision.remove_headers))
        self.denied += 1
        log.info("denied %s (%s)", decision.identity or "anonymous", decision.reason)
        code = code_pb2.UNAUTHENTICATED if decision.status == 401 else code_pb2.PERMISSION_DENIED
        from envoy.type.v3 import http_status_pb2
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=decision.status),
                body=denied_body(decision)))


def authz_server(policy: AuthPolicy) -> grpc.aio.Server:
    """The ext_authz gRPC server (not started) deciding by *policy*."""
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AuthorizationService(policy), server)
    return server
