"""The evidence API behind ``/.well-known/ratls/`` and the ``/healthz`` readiness probe,
served to Envoy over a unix socket. Answers are JSON, or CBOR with ``Accept: application/cbor``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding

from ratls import cbor
from ratls.cert import spki_der
from ratls.errors import RatlsError

from .envoy_config import CLIENT_HEADER
from .evidence_limiter import FairEvidenceLimiter, Refused
from .facts import Facts
from .identity import IdentityManager
from .metrics import MetricFamily

log = logging.getLogger("ratls.gateway.evidence")

PREFIX = "/.well-known/ratls"
MEDIA_CMW_CBOR = "application/cmw+cbor"
_NONCE = re.compile(r"^[0-9a-fA-F]{16,128}$")


def _wants_cbor(request: web.Request) -> bool:
    return "application/cbor" in request.headers.get("Accept", "") or request.query.get("format") == "cbor"


def _reply(request: web.Request, doc: dict[str, Any], cbor_doc: dict[str, Any] | None = None,
           status: int = 200) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if _wants_cbor(request):
        return web.Response(body=cbor.encode(cbor_doc if cbor_doc is not None else doc), status=status,
                            content_type="application/cbor", headers=headers)
    return web.Response(text=json.dumps(doc, indent=1, sort_keys=True), status=status,
                        content_type="application/json", headers=headers)


class EvidenceApi(Facts):
    def __init__(self, identity: IdentityManager, *, manifest: Callable[[], dict[str, Any] | None],
                 security_config: Callable[[], dict[str, Any]], readiness: Callable[[], list[str]],
                 limiter: FairEvidenceLimiter | None = None) -> None:
        self.identity = identity
        self.limiter = limiter or FairEvidenceLimiter(2.0, 4)
        self.manifest = manifest
        self.security_config = security_config
        self.readiness = readiness
        self.evidence_served = 0
        self.evidence_limited = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4096)
        app.router.add_get(f"{PREFIX}/certificate", self.certificate)
        app.router.add_get(f"{PREFIX}/evidence", self.evidence)
        app.router.add_get(f"{PREFIX}/manifest", self.manifest_handler)
        app.router.add_get(f"{PREFIX}/config", self.config_handler)
        app.router.add_get(PREFIX + "/rims/{ref_id}", self.reference_handler)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def certificate(self, request: web.Request) -> web.Response:
        current = self.identity.current
        if current is None:
            return _reply(request, {"error": "no certificate issued yet"}, status=503)
        der = current.cert.public_bytes(Encoding.DER)
        doc = {
            "profile": "ratls/1",
            "certificate_pem": current.cert_pem.decode(),
            "certificate_sha256": hashlib.sha256(der).hexdigest(),
            "pubkey_sha256": hashlib.sha256(spki_der(current.key.public_key())).hexdigest(),
            "not_after": current.not_after.isoformat(),
            "claims": current.issued.claims.to_json(),
            "simulated": self.identity.platform.simulated,
        }
        return _reply(request, doc, {"certificate": der, "claims": current.issued.claims_cbor})

    async def evidence(self, request: web.Request) -> web.Response:
        nonce_hex = request.query.get("nonce", "")
        if not _NONCE.match(nonce_hex) or len(nonce_hex) % 2:
            return _reply(request, {"error": "nonce must be 8 to 64 bytes in hex (?nonce=<hex>)"}, status=400)
        # Envoy overwrites this header with the connection's peer address on the evidence route;
        # the socket is reachable only by Envoy.
        client = request.headers.get(CLIENT_HEADER, "unknown")
        try:
            collection = await self.limiter.run(
                client, lambda: asyncio.to_thread(self.identity.fresh_evidence, bytes.fromhex(nonce_hex)))
        except Refused as refused:
            self.evidence_limited += 1
            resp = _reply(request, {"error": f"{refused.reason}; retry after the Retry-After seconds"}, status=429)
            resp.headers["Retry-After"] = str(max(1, math.ceil(refused.retry_after)))
            return resp
        except RatlsError as exc:
            log.error("fresh evidence failed: %s", exc)
            return _reply(request, {"error": "evidence collection failed"}, status=503)
        self.evidence_served += 1
        if _wants_cbor(request):
            return web.Response(body=collection, content_type=MEDIA_CMW_CBOR, headers={"Cache-Control": "no-store"})
        return _reply(request, {"nonce": nonce_hex.lower(), "media_type": MEDIA_CMW_CBOR,
                                "evidence": base64.b64encode(collection).decode()})

    async def reference_handler(self, request: web.Request) -> web.Response:
        """A reference document (an NVIDIA RIM) the GPU evidence names, by ID. Vendor-signed and the
        same for every GPU of that driver and VBIOS: clients verify it, so it is served as is."""
        ref_id = request.match_info["ref_id"]
        devices = self.identity.devices
        body = devices.reference(ref_id) if devices is not None and len(ref_id) <= 128 else None
        if body is None:
            return _reply(request, {"error": f"no reference document {ref_id[:128]!r} here"}, status=404)
        return web.Response(body=body, content_type="application/swid+xml",
                            headers={"Cache-Control": "public, max-age=3600"})

    async def manifest_handler(self, request: web.Request) -> web.Response:
        manifest = self.manifest()
        if manifest is None:
            return _reply(request, {"error": "no model manifest (external Triton without a repository path)"},
                          status=404)
        return _reply(request, manifest)

    async def config_handler(self, request: web.Request) -> web.Response:
        return _reply(request, self.security_config())

    def metric_families(self) -> list[MetricFamily]:
        return [MetricFamily("ratls_fresh_evidence_total", "counter", "fresh evidence served").add(
                    self.evidence_served),
                MetricFamily("ratls_fresh_evidence_rate_limited_total", "counter",
                             "fresh evidence requests refused by the rate limit").add(self.evidence_limited)]

    async def healthz(self, request: web.Request) -> web.Response:
        reasons = self.readiness()
        if reasons:
            return web.json_response({"status": "unready", "reasons": reasons}, status=503)
        return web.json_response({"status": "ready"})
