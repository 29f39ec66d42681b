"""Per-process caches for the pure, expensive parts of GPU verification.

A certificate signature either verifies under an issuer's key or it does not, whatever the time,
so that answer is kept by the two certificates' DER. A RIM is the same document for every GPU
with that driver and VBIOS (eight GPUs, one RIM pair): a passing verification is kept by the
document's digest and what it was checked against, and reused only while every certificate of
its chain is still valid at the new ``now`` - so the cache never changes a verdict."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from ...appraisal import Check
from .types import RimKind, VerifiedRim

MAX_RIMS = 64
_RIMS: OrderedDict[tuple[object, ...], tuple[VerifiedRim, datetime, datetime]] = OrderedDict()


@lru_cache(maxsize=1024)
def _signed(cert_der: bytes, issuer_der: bytes) -> bool:
    cert, issuer = x509.load_der_x509_certificate(cert_der), x509.load_der_x509_certificate(issuer_der)
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether *issuer*'s key signed *cert* (and the names chain), cached."""
    return _signed(cert.public_bytes(Encoding.DER), issuer.public_bytes(Encoding.DER))


def _window(rim: VerifiedRim, roots: Sequence[x509.Certificate]) -> tuple[datetime, datetime]:
    certs = [*(rim.rim.signer_chain if rim.rim else ()), *roots]
    return max(c.not_valid_before_utc for c in certs), min(c.not_valid_after_utc for c in certs)


def cached_rim(xml: bytes, kind: RimKind, roots: Sequence[x509.Certificate], now: datetime, *,
               expected_version: str | None, expected_product: str | None,
               verify: Callable[..., VerifiedRim]) -> VerifiedRim:
    key = (hashlib.sha256(xml).digest(), kind, (expected_version or "").lower(), expected_product,
           tuple(r.public_bytes(Encoding.DER) for r in roots))
    hit = _RIMS.get(key)
    if hit is not None and hit[1] <= now <= hit[2]:
        _RIMS.move_to_end(key)
        verified = hit[0]
        return VerifiedRim(kind, verified.rim, [_restated(c, now) for c in verified.checks])
    verified = verify(xml, kind, roots, now, expected_version=expected_version, expected_product=expected_product)
    if verified.ok:
        _RIMS[key] = (verified, *_window(verified, roots))
        while len(_RIMS) > MAX_RIMS:
            _RIMS.popitem(last=False)
    return verified


def _restated(check: Check, now: datetime) -> Check:
    # the chain check names the instant it was judged at; a reused verdict is judged at this one
    if check.name.endswith(".chain"):
        head = check.detail.split(", valid at ")[0]
        return Check(check.name, check.ok, f"{head}, valid at {now.isoformat()} (cached verification)")
    return check
