"""Which simulated root a piece of simulated evidence chains to (for `ratls policy init`)."""

from __future__ import annotations

from cryptography import x509

from ...evidence import Evidence
from ...x509util import X509_ERRORS


def simulated_root_sha256(evidence: Evidence) -> str | None:
    if evidence.platform == "sim" and "ark" in evidence.endorsements:
        from ..snp.certs import fingerprint, load_certificate

        return fingerprint(load_certificate(evidence.endorsements["ark"], "simulated ARK"))
    if evidence.platform == "sim-tdx":
        from ..tdx.abi import parse_quote
        from ..tdx.verify import fingerprint as tdx_fingerprint

        try:
            certs = x509.load_pem_x509_certificates(parse_quote(evidence.raw).pck_chain_pem)
        except X509_ERRORS:
            return None
        return tdx_fingerprint(certs[-1]) if certs else None
    return None
