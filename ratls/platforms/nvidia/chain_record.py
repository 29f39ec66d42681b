"""The device chain as a certificate carries it: DER certificates back to back, leaf first,
without the root every verifier pins anyway (a third smaller than the PEM NVML hands out).
Readers also take leaf-first PEM, the form vendors' files and ``--chain`` use."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ... import der
from ...errors import EvidenceError
from ...x509util import X509_ERRORS, force_parse
from .certs import parse_chain_pem

MAX_CERTS = 8


def compact_chain(pem: bytes, pinned_roots: Sequence[x509.Certificate]) -> bytes:
    certs = parse_chain_pem(pem)
    roots = {r.public_bytes(Encoding.DER) for r in pinned_roots}
    ders = [c.public_bytes(Encoding.DER) for c in certs]
    while ders and ders[-1] in roots:
        ders.pop()
    return b"".join(ders)


def read_chain(data: bytes) -> list[x509.Certificate]:
    if data.lstrip().startswith(b"-----BEGIN"):
        return parse_chain_pem(data)
    certs: list[x509.Certificate] = []
    offset = 0
    while offset < len(data):
        if len(certs) == MAX_CERTS:
            raise EvidenceError(f"the device chain has more than {MAX_CERTS} certificates")
        tlv = der.read_tlv(data, offset)
        end = tlv.end
        if tlv.tag != 0x30:
            raise EvidenceError(f"device chain: byte {offset} does not start a DER certificate")
        try:
            cert = x509.load_der_x509_certificate(data[offset:end])
        except X509_ERRORS as exc:
            raise EvidenceError(f"device chain certificate {len(certs)} is not DER X.509: {exc}") from None
        # every field decoded now: a malformed extension is a parse error here, never later
        certs.append(force_parse(cert, f"device chain certificate {len(certs)}"))
        offset = end
    if not certs:
        raise EvidenceError("the device chain is empty")
    return certs
