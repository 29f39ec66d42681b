from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ratls.errors import EvidenceError
from ratls.x509util import force_parse, looks_like_pem


def _cert() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))


def test_duplicate_extension_is_a_typed_error() -> None:
    """Found by fuzzing the TDX PCK chain: one flipped bit turned the SubjectKeyIdentifier OID
    into a second BasicConstraints, and `cryptography` raised DuplicateExtension (not a
    ValueError) from deep inside verification."""
    der = _cert().public_bytes(Encoding.DER)
    ski, bc = bytes.fromhex("0603551d0e"), bytes.fromhex("0603551d13")
    assert der.count(ski) == 1
    mutated = x509.load_der_x509_certificate(der.replace(ski, bc))
    with pytest.raises(EvidenceError, match="Duplicate"):
        force_parse(mutated)


def test_pem_sniffing() -> None:
    der = _cert().public_bytes(Encoding.DER)
    assert not looks_like_pem(der + b"-----BEGIN CERTIFICATE-----")
    assert looks_like_pem(b"subject=...\n-----BEGIN CERTIFICATE-----\n")
