"""Per-process caches for the pure, expensive parts of GPU verification.

A certificate signature either verifies under an issuer's key or it does not, whatever the time,
so that answer is kept by the two certificates' DER. A RIM is the same document for every GPU
with that driver and VBIOS (eight GPUs, one RIM pair): a passing verification is kept by the
document's digest and what it was checked against, and reused only while every certificate of
its chain is still valid at the new ``now`` - so the cache never changes a verdict."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from ...appraisal import Check
from .types import RimKind, VerifiedRim

MAX_RIMS = 64
MAX_SIGNATURES = 1024
_RIMS: OrderedDict[tuple[object, ...], tuple[VerifiedRim, datetime, datetime]] = OrderedDict()
_SIGNATURES: OrderedDict[tuple[bytes, bytes], bool] = OrderedDict()
_LOCK = threading.Lock()  # the proxy verifies on worker threads


def clear() -> None:
    with _LOCK:
        _RIMS.clear()
        _SIGNATURES.clear()


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any, limit: int) -> None:
    with _LOCK:
        cache[key] = value
        while len(cache) > limit:
            cache.popitem(last=False)


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether *issuer*'s key signed *cert* (and the names chain), cached by the two DERs."""
    key = (cert.public_bytes(Encoding.DER), issuer.public_bytes(Encoding.DER))
    with _LOCK:
        known = _SIGNATURES.get(key)
    if known is not None:
        return known
    try:
        cert.verify_directly_issued_by(issuer)
        ok = True
    except (ValueError, TypeError, InvalidSignature):
        ok = False
    _remember(_SIGNATURES, key, ok, MAX_SIGNATURES)
    return ok


def _window(rim: VerifiedRim, roots: Sequence[x509.Certificate]) -> tuple[datetime, datetime]:
    certs = [*(rim.rim.signer_chain if rim.rim else ()), *roots]
    return max(c.not_valid_before_utc for c in certs), min(c.not_valid_after_utc for c in certs)


def cached_rim(xml: bytes, kind: RimKind, roots: Sequence[x509.Certificate], now: datetime, *,
               expected_version: str | None, expected_product: str | None,
               verify: Callable[..., VerifiedRim]) -> VerifiedRim:
    key = (hashlib.sha256(xml).digest(), kind, (expected_version or "").lower(), expected_product,
           tuple(r.public_bytes(Encoding.DER) for r in roots))
    with _LOCK:
        hit = _RIMS.get(key)
    if hit is not None and hit[1] <= now <= hit[2]:
        return VerifiedRim(kind, hit[0].rim, [_restated(c, now) for c in hit[0].checks])
    verified = verify(xml, kind, roots, now, expected_version=expected_version, expected_product=expected_product)
    if verified.ok:
        _remember(_RIMS, key, (verified, *_window(verified, roots)), MAX_RIMS)
    return verified


def _restated(check: Check, now: datetime) -> Check:
    # the chain check names the instant it was judged at; a reused verdict is judged at this one
    if check.name.endswith(".chain"):
        head = check.detail.split(", valid at ")[0]
        return Check(check.name, check.ok, f"{head}, valid at {now.isoformat()} (cached verification)")
    return check
