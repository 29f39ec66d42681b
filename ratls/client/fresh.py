"""Freshness: challenge the gateway's evidence API with a random nonce and require fresh
hardware evidence bound to the same key the server presents in TLS."""

from __future__ import annotations

import json
import secrets
import ssl
import urllib.error
import urllib.request
from datetime import datetime

from ..appraisal import Appraisal
from ..cert import spki_der
from ..errors import EvidenceError
from ..pipeline import verify_fresh_evidence
from ..policy import Policy
from ..trust import Trust
from .verify import VerifiedServer

EVIDENCE_PATH = "/.well-known/ratls/evidence"


def pinned_context(server: VerifiedServer) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=server.cert_pem)
    ctx.check_hostname = False  # trust is the pinned certificate itself, verified beforehand
    return ctx


def fetch_fresh(server: VerifiedServer, nonce: bytes, timeout: float = 30.0) -> bytes:
    url = f"https://{server.target.host}:{server.target.port}{EVIDENCE_PATH}?nonce={nonce.hex()}"
    request = urllib.request.Request(url, headers={"Accept": "application/cbor"})
    try:
        with urllib.request.urlopen(request, context=pinned_context(server), timeout=timeout) as resp:  # noqa: S310
            return resp.read(1 << 20)
    except urllib.error.HTTPError as exc:
        detail = exc.read(512).decode("utf-8", "replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except ValueError:
            pass
        raise EvidenceError(f"the evidence API answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise EvidenceError(f"cannot reach the evidence API: {exc}") from None


def verify_fresh(server: VerifiedServer, policy: Policy | None, *, now: datetime, trust: Trust | None = None,
                 nonce: bytes | None = None) -> Appraisal:
    nonce = nonce or secrets.token_bytes(32)
    try:
        collection = fetch_fresh(server, nonce)
    except EvidenceError as exc:
        appraisal = Appraisal(platform=None, policy_applied=policy is not None)
        from ..appraisal import failed
        appraisal.add(failed("fresh.fetch", str(exc)))
        return appraisal
    served_spki = spki_der(server.ratls.cert.public_key())  # type: ignore[arg-type]
    return verify_fresh_evidence(collection, served_spki, policy=policy, now=now, nonce=nonce, trust=trust)
