"""Verify a live server's RA-TLS certificate against a policy before any request byte is
sent, and hand back exactly what to pin (the certificate, or its key for curl)."""

from __future__ import annotations

import base64
import hashlib
import ssl
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..appraisal import Appraisal
from ..cert import RatlsCertificate, spki_der
from ..errors import PolicyViolation
from ..pipeline import verify_certificate
from ..policy import Policy, load_policy
from ..timeutil import utcnow
from ..trust import Trust
from .fetch import Target, fetch_certificate, parse_target


@dataclass(frozen=True)
class VerifiedServer:
    target: Target
    cert_der: bytes
    appraisal: Appraisal
    ratls: RatlsCertificate
    trust: Trust | None = None  # what it was verified with (incl. reference documents fetched for it)

    @property
    def cert_pem(self) -> str:
        return ssl.DER_cert_to_PEM_cert(self.cert_der)

    @property
    def cert_sha256(self) -> str:
        return hashlib.sha256(self.cert_der).hexdigest()

    @property
    def curl_pin(self) -> str:
        """``sha256//<base64>`` of the SubjectPublicKeyInfo, as ``curl --pinnedpubkey`` takes it."""
        digest = hashlib.sha256(spki_der(self.ratls.cert.public_key())).digest()  # type: ignore[arg-type]
        return "sha256//" + base64.b64encode(digest).decode()

    @property
    def names(self) -> list[str]:
        return self.ratls.sans()

    @property
    def not_after(self) -> datetime:
        return self.ratls.cert.not_valid_after_utc


def as_policy(policy: Policy | str | Path) -> Policy:
    return policy if isinstance(policy, Policy) else load_policy(policy)


def verify_server(url: str, policy: Policy | str | Path, *, now: datetime | None = None,
                  trust: Trust | None = None, timeout: float = 10.0) -> VerifiedServer:
    """Fetch the certificate (no application data is sent), verify it, or raise PolicyViolation."""
    target = parse_target(url)
    return verify_presented(target, fetch_certificate(target, timeout=timeout), policy, now=now, trust=trust)


def verify_presented(target: Target, der: bytes, policy: Policy | str | Path, *, now: datetime | None = None,
                     trust: Trust | None = None) -> VerifiedServer:
    """Verify a certificate *target* presented (already fetched), or raise PolicyViolation."""
    from .references import with_references
    trust = with_references(target, der, trust)
    appraisal, rc = verify_certificate(der, policy=as_policy(policy), now=now or utcnow(), trust=trust)
    if not appraisal.ok or rc is None:
        failures = "; ".join(f"{c.name}: {c.detail}" for c in appraisal.failures)
        raise PolicyViolation(f"{target.host}:{target.port} failed RA-TLS verification: {failures}",
                              appraisal=appraisal)
    return VerifiedServer(target, der, appraisal, rc, trust)
