"""Vendor trust anchors shipped in the package: loaded once, refused unless the file is exactly the
certificate whose SHA-256 the code pins (a damaged or swapped file never becomes a root)."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .errors import ConfigError


@cache
def pinned_root(package: str, path: str, sha256: str, what: str) -> x509.Certificate:
    certs = x509.load_pem_x509_certificates(resources.files(package).joinpath(path).read_bytes())
    if len(certs) != 1 or hashlib.sha256(certs[0].public_bytes(Encoding.DER)).hexdigest() != sha256:
        raise ConfigError(f"the shipped {what} does not match its pinned fingerprint",
                          hint="the installation is damaged or was modified; reinstall ratls-gateway")
    return certs[0]
