"""Intel's TCB verdict for a TDX quote, without dcap-qvl's rule on the TD's attributes.

dcap-qvl (0.7) ends every verification with a fixed rule on TDATTRIBUTES: DEBUG must be clear
and SEPT_VE_DISABLE set. It has no switch for that rule (its verifier takes only a root; its
QuotePolicy has no attribute option) and applies it last, after the TCB info, QE identity, CRLs,
PCK chain, every signature and the TCB-level match. Here those two bits are the policy's
(``tdx.debug``, ``tdx.sept_ve_disable``: see appraise.py), not the collateral's.

So when that rule is dcap-qvl's only objection, the TCB verdict is asked of dcap-qvl again, on a
copy of the quote that differs in exactly those two bits: the same header, TD report body, QE
report, QE auth data and PCK SGX extension (CPUSVN, PCESVN, FMSPC...), the same TCB info and QE
identity documents, re-signed for this one call under a throwaway root (their real signatures,
the CRLs and the PCK chain were established by the first call). The verdict still comes from
dcap-qvl's own TCB evaluation; every other attribute rule (reserved bits, migration, service TDs)
still applies in the second call.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from . import abi

# dcap-qvl's words for its refusals that are policy questions here (tdx.debug, tdx.sept_ve_disable).
LEFT_TO_POLICY = frozenset({"SEPT_VE_DISABLE is not enabled", "Debug mode is enabled"})
SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_TD_ATTRIBUTES_AT = 16 + 48 + 48 + 8  # TEE_TCB_SVN, MRSEAM, MRSIGNERSEAM, SEAMATTRIBUTES
_QE_REPORT_DATA_AT = abi.ENCLAVE_REPORT_SIZE - 64


def raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-P256-SHA256 as Intel encodes it: r || s, 32 bytes each, big-endian."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def ec_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    numbers = key.public_key().public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


def issue_cert(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey,
               signer: ec.EllipticCurvePrivateKey, not_before: dt.datetime, not_after: dt.datetime, *, ca: bool,
               extra: tuple[x509.ExtensionType, ...] = ()) -> x509.Certificate:
    """A certificate shaped like Intel's SGX/TDX ones (basic constraints, key identifiers)."""
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                              critical=False))
    for ext in extra:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(signer, hashes.SHA256())


def issue_crl(issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey, last: dt.datetime,
              until: dt.datetime) -> bytes:
    crl = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
           .last_update(last).next_update(until)
           .add_extension(x509.CRLNumber(1), critical=False)
           .sign(key, hashes.SHA256()))
    return crl.public_bytes(serialization.Encoding.DER)


def assemble_quote(signed: bytes, attest_key: ec.EllipticCurvePrivateKey, qe_report: bytes,
                   qe_report_signature: bytes, qe_auth_data: bytes, pck_chain_pem: bytes) -> bytes:
    """A quote from its signed part (header and body) and the signature data the quoting enclave
    appends: the attestation key's signature and point, then the QE report certification data."""
    pck = pck_chain_pem + b"\0"
    inner = (qe_report + qe_report_signature + struct.pack("<H", len(qe_auth_data)) + qe_auth_data
             + struct.pack("<HI", abi.CERT_TYPE_PCK_CHAIN, len(pck)) + pck)
    sig_data = (raw_signature(attest_key, signed) + ec_point(attest_key)
                + struct.pack("<HI", abi.CERT_TYPE_QE_REPORT, len(inner)) + inner)
    return signed + struct.pack("<I", len(sig_data)) + sig_data


@dataclass(frozen=True)
class CollateralSigners:
    """The keys and certificates that sign a collateral set: root, PCK CA, TCB signing."""

    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    pck_ca: x509.Certificate
    pck_ca_key: ec.EllipticCurvePrivateKey
    tcb_signer: x509.Certificate
    tcb_key: ec.EllipticCurvePrivateKey

    def collateral(self, tcb_info: str, qe_identity: str, crl_from: dt.datetime,
                   crl_until: dt.datetime) -> dict[str, str]:
        """QuoteCollateralV3 (dcap-qvl's JSON form) for these TCB info and QE identity documents."""
        pem = serialization.Encoding.PEM
        tcb_chain = (self.tcb_signer.public_bytes(pem) + self.root.public_bytes(pem)).decode()
        return {
            "pck_crl_issuer_chain": (self.pck_ca.public_bytes(pem) + self.root.public_bytes(pem)).decode(),
            "root_ca_crl": issue_crl(self.root, self.root_key, crl_from, crl_until).hex(),
            "pck_crl": issue_crl(self.pck_ca, self.pck_ca_key, crl_from, crl_until).hex(),
            "tcb_info_issuer_chain": tcb_chain,
            "tcb_info": tcb_info,
            "tcb_info_signature": raw_signature(self.tcb_key, tcb_info.encode()).hex(),
            "qe_identity_issuer_chain": tcb_chain,
            "qe_identity": qe_identity,
            "qe_identity_signature": raw_signature(self.tcb_key, qe_identity.encode()).hex(),
        }


def _root_name(chain: list[x509.Certificate]) -> x509.Name:
    return chain[-1].subject if chain[-1].subject == chain[-1].issuer else chain[-1].issuer


def _copy(quote: abi.TdxQuote, chain: list[x509.Certificate], collateral: dict[str, Any],
          now: dt.datetime) -> tuple[bytes, str, bytes]:
    """The copy of *quote* with DEBUG clear and SEPT_VE_DISABLE set, and its collateral: the
    (quote, QuoteCollateralV3 JSON, root DER) dcap-qvl is asked about."""
    if len(chain) < 2 or not all(isinstance(collateral.get(k), str) for k in ("tcb_info", "qe_identity")):
        raise ValueError("the PCK chain or the collateral is not what dcap-qvl verified")
    root_key, ca_key, pck_key, tcb_key, attest_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(5))
    start, until = now - dt.timedelta(days=1), now + dt.timedelta(days=1)
    root_name = _root_name(chain)
    root = issue_cert(root_name, root_name, root_key, root_key, start, until, ca=True)
    pck_ca = issue_cert(chain[1].subject, root_name, ca_key, root_key, start, until, ca=True)
    tcb_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "TCB verdict signer (throwaway)")])
    tcb_signer = issue_cert(tcb_name, root_name, tcb_key, root_key, start, until, ca=False)
    sgx = chain[0].extensions.get_extension_for_oid(SGX_EXTENSION_OID).value
    leaf = issue_cert(chain[0].subject, pck_ca.subject, pck_key, ca_key, start, until, ca=False,
                      extra=(x509.UnrecognizedExtension(SGX_EXTENSION_OID, sgx.value),))
    pem = serialization.Encoding.PEM

    attributes = (quote.body.attributes | abi.TD_ATTR_SEPT_VE_DISABLE) & ~abi.TD_ATTR_DEBUG
    at = len(quote.signed) - abi.BODY_TYPES[quote.body_type][1] + _TD_ATTRIBUTES_AT
    if quote.signed[at:at + 8] != quote.body.td_attributes:
        raise ValueError("TDATTRIBUTES are not where the quote layout puts them")
    signed = quote.signed[:at] + attributes.to_bytes(8, "little") + quote.signed[at + 8:]
    qe_report = (quote.qe_report.raw[:_QE_REPORT_DATA_AT]
                 + hashlib.sha256(ec_point(attest_key) + quote.qe_auth_data).digest() + bytes(32))
    copied = assemble_quote(signed, attest_key, qe_report, raw_signature(pck_key, qe_report), quote.qe_auth_data,
                            b"".join(c.public_bytes(pem) for c in (leaf, pck_ca, root)))
    signers = CollateralSigners(root, root_key, pck_ca, ca_key, tcb_signer, tcb_key)
    doc = signers.collateral(collateral["tcb_info"], collateral["qe_identity"], start, until)
    return copied, json.dumps(doc), root.public_bytes(serialization.Encoding.DER)


def verdict_without_attribute_rule(dcap_qvl: Any, quote: abi.TdxQuote, chain: list[x509.Certificate],
                                   collateral: dict[str, Any], now: dt.datetime) -> Any:
    """dcap-qvl's VerifiedReport for *quote* as if DEBUG were clear and SEPT_VE_DISABLE set.

    Only for a quote and collateral that dcap-qvl refused for one of LEFT_TO_POLICY and nothing
    else: that refusal is what established the signatures, chains and CRLs this call re-signs.
    Raises ValueError with dcap-qvl's reason when it refuses the copy too."""
    copied, doc, root_der = _copy(quote, chain, collateral, now)
    return dcap_qvl.verify_with_root_ca(copied, dcap_qvl.QuoteCollateralV3.from_json(doc), root_der,
                                        int(now.timestamp()))
