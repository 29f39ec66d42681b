"""Freshness: challenge the gateway's evidence API with a random nonce and require fresh
hardware evidence bound to the same key the server presents in TLS.

The evidence API rate-limits (429) and may be briefly unavailable (503), both with a
``Retry-After`` header; both are retried within a small budget. A rate limit that persists is
the client's own doing and says nothing about the server: ``EvidenceApiBusy``, not a verdict (the
CLI exits 2). A server that still cannot produce fresh evidence, and every other failure to get
it, has not proven freshness: a failed ``fresh.fetch`` check (a verdict).
"""

from __future__ import annotations

import json
import math
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime

from .. import cbor
from ..appraisal import Appraisal, failed
from ..cert import spki_der
from ..errors import EvidenceError, RatlsError
from ..pipeline import verify_fresh_evidence
from ..policy import Policy
from ..trust import Trust
from .pinning import origin, pinned_context
from .verify import VerifiedServer

__all__ = ["EVIDENCE_PATH", "EvidenceApiBusy", "fetch_fresh", "pinned_context", "verify_fresh"]

EVIDENCE_PATH = "/.well-known/ratls/evidence"
BUSY_STATUSES = {429: "is rate-limiting this client", 503: "is temporarily unavailable"}
ATTEMPTS = 3  # requests in all, the first included
MAX_WAIT = 10.0  # seconds slept across all retries; a longer Retry-After is reported, not waited for
DEFAULT_RETRY_AFTER = 1.0  # a busy answer without a usable Retry-After
MAX_BODY = 1 << 20
MAX_ERROR_BODY = 4096


class EvidenceApiBusy(RatlsError):
    """The evidence API declined for now (429 or 503) after the retry budget was spent. Not a
    verdict: nothing was judged, and the same request may succeed later."""

    def __init__(self, status: int, retry_after: float | None, detail: str) -> None:
        when = f"retry after {math.ceil(retry_after)} s" if retry_after is not None else "retry later"
        super().__init__(f"the evidence API {BUSY_STATUSES[status]} ({status}); {when}",
                         hint=f"the server says: {detail}" if detail else None)
        self.status, self.retry_after, self.detail = status, retry_after, detail


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP-date (RFC 9110 §10.2.3); None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also takes '²'
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _decoded(body: bytes, content_type: str) -> object:
    """The error body as JSON or CBOR (the gateway answers CBOR to ``Accept: application/cbor``);
    the declared type is tried first, then the other. None if neither decodes."""
    decoders: list[Callable[[bytes], object]] = [lambda b: json.loads(b.decode("utf-8")),
                                                 lambda b: cbor.decode(b, what="error body")]
    if "cbor" in content_type:
        decoders.reverse()
    for decode in decoders:
        try:
            return decode(body)
        except (ValueError, EvidenceError):
            continue
    return None


def error_detail(body: bytes, headers: Message | None) -> str:
    """What the server said, readable: the ``error`` field of a JSON or CBOR body, else the text
    if it is printable, else a size (never raw CBOR bytes printed as text)."""
    content_type = headers.get_content_type() if headers is not None else ""
    doc = _decoded(body, content_type)
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return doc["error"]
    if isinstance(doc, str):
        return doc
    text = " ".join(body.decode("utf-8", "replace").split())
    if text and text.isprintable() and "\ufffd" not in text:
        return text[:300]
    return f"{len(body)} bytes of {content_type or 'undeclared type'}" if body else ""


def _get(server: VerifiedServer, nonce: bytes, timeout: float) -> tuple[int, Message | None, bytes]:
    """One GET over a connection pinned to the verified certificate: status, headers, body."""
    url = f"{origin(server.target)}{EVIDENCE_PATH}?nonce={nonce.hex()}"
    request = urllib.request.Request(url, headers={"Accept": "application/cbor"})  # noqa: S310 - always https
    try:
        with urllib.request.urlopen(request, context=pinned_context(server), timeout=timeout) as resp:  # noqa: S310
            return resp.status, resp.headers, resp.read(MAX_BODY)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read(MAX_ERROR_BODY)
    except (urllib.error.URLError, OSError) as exc:
        raise EvidenceError(f"cannot reach the evidence API: {exc}") from None


def fetch_fresh(server: VerifiedServer, nonce: bytes, timeout: float = 30.0, *, attempts: int = ATTEMPTS,
                max_wait: float = MAX_WAIT, sleep: Callable[[float], None] = time.sleep) -> bytes:
    """The CMW collection the evidence API returns for *nonce*. A 429/503 is retried as its
    Retry-After asks, up to *attempts* requests and *max_wait* seconds of sleeping in all; then
    EvidenceApiBusy. Any other non-200 answer is an EvidenceError."""
    attempt, waited = 1, 0.0
    while True:
        status, headers, body = _get(server, nonce, timeout)
        if status == 200:
            return body
        detail = error_detail(body, headers)
        if status not in BUSY_STATUSES:
            raise EvidenceError(f"the evidence API answered {status}: {detail}")
        retry_after = retry_after_seconds(headers.get("Retry-After") if headers is not None else None)
        delay = DEFAULT_RETRY_AFTER if retry_after is None else retry_after
        if attempt >= attempts or waited + delay > max_wait:
            if status == 429:
                raise EvidenceApiBusy(status, retry_after, detail)
            # A server that keeps failing to produce fresh evidence has not proven freshness:
            # that stays a verdict (only a rate limit, the client's own doing, is not one).
            raise EvidenceError(f"the evidence API stayed unavailable (503) after {attempt} attempts: {detail}")
        sleep(delay)
        attempt, waited = attempt + 1, waited + delay


def verify_fresh(server: VerifiedServer, policy: Policy | None, *, now: datetime, trust: Trust | None = None,
                 nonce: bytes | None = None, attempts: int = ATTEMPTS, max_wait: float = MAX_WAIT,
                 sleep: Callable[[float], None] = time.sleep) -> Appraisal:
    """Appraise fresh evidence for a random (or the given) nonce. Raises EvidenceApiBusy when the
    API stays rate-limited or unavailable (no verdict); every other failure is in the Appraisal."""
    nonce = nonce or secrets.token_bytes(32)
    try:
        collection = fetch_fresh(server, nonce, attempts=attempts, max_wait=max_wait, sleep=sleep)
    except EvidenceError as exc:
        appraisal = Appraisal(platform=None, policy_applied=policy is not None)
        appraisal.add(failed("fresh.fetch", str(exc)))
        return appraisal
    served_spki = spki_der(server.ratls.cert.public_key())  # type: ignore[arg-type]
    return verify_fresh_evidence(collection, served_spki, policy=policy, now=now, nonce=nonce, trust=trust)
