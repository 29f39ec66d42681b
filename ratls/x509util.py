"""Certificate loading helpers shared by the RA-TLS profile and the platform verifiers."""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding

from .errors import EvidenceError

# Everything `cryptography` raises for malformed or unsupported certificate bytes.
X509_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion, x509.DuplicateExtension)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, hex: how roots are pinned in code and in policies."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def force_parse(cert: x509.Certificate, what: str = "certificate") -> x509.Certificate:
    """`cryptography` decodes certificate fields lazily; touch each one now so a malformed
    field is a typed error here rather than a ValueError deep inside verification."""
    try:
        _ = (cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc,
             cert.signature_hash_algorithm, cert.public_key(), list(cert.extensions))
        for ext in cert.extensions:
            _ = ext.value
    except X509_ERRORS as exc:
        raise EvidenceError(f"{what} is malformed: {exc}", hint="it may be truncated or corrupted") from None
    return cert


def looks_like_pem(data: bytes) -> bool:
    """PEM, not DER. A DER certificate is a SEQUENCE (first byte 0x30) and may itself contain
    PEM text (RA-TLS certificates carry TDX collateral with PEM issuer chains), so the
    presence of '-----BEGIN' alone does not make it PEM."""
    return not data.startswith(b"\x30") and b"-----BEGIN" in data
