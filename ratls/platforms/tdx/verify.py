"""TDX quote authenticity: quote signature, QE report signature and binding, PCK chain to a
pinned root, then collateral (TCB info, QE identity, CRLs) through ``dcap-qvl``.

Every step is a named check with a reason, so a mutated quote says which link broke. The
signature and chain checks run here (Python, ``cryptography``) even though dcap-qvl repeats
them, because its error strings do not say which byte was wrong and because quotes without
collateral should still get a precise authenticity answer. The TCB verdict comes only from
dcap-qvl with the collateral; without collateral the quote is not accepted (fail closed).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.serialization import Encoding

from ...appraisal import Check, failed, passed
from ...errors import EvidenceError
from ...evidence import FetchFailed, VerifiedEvidence
from ...pinned import pinned_root
from ...x509util import X509_ERRORS, fingerprint, force_parse
from .abi import INTEL_QE_VENDOR_ID, TdxQuote
from .tcb_verdict import LEFT_TO_POLICY, verdict_without_attribute_rule

INTEL_ROOT_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"


def shipped_root() -> x509.Certificate:
    """The Intel SGX Root CA shipped in the package, refused if its fingerprint changed."""
    return pinned_root(__package__, "roots/intel_sgx_root_ca.pem", INTEL_ROOT_SHA256, "Intel SGX Root CA")


@dataclass
class TdxTrust:
    """``root`` is the one CA the PCK chain must end in (Intel's, or a pinned simulated root)."""

    root: x509.Certificate
    simulated: bool = False


@dataclass
class CollateralResult:
    status: str
    advisory_ids: list[str]
    qe_status: str | None = None
    platform_status: str | None = None
    tcb_eval_data_number: int | None = None
    tcb_info_next_update: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def ecdsa_p256_key(raw: bytes) -> ec.EllipticCurvePublicKey:
    if len(raw) != 64:
        raise EvidenceError(f"attestation key is {len(raw)} bytes, expected 64 (P-256 x||y)")
    try:
        return ec.EllipticCurvePublicNumbers(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"),
                                             ec.SECP256R1()).public_key()
    except ValueError:
        raise EvidenceError("attestation key is not a point on P-256") from None


def verify_raw_signature(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    """ECDSA-P256-SHA256 with a 64-byte big-endian r||s signature (Intel's encoding)."""
    if len(signature) != 64:
        return False
    der = utils.encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


def load_pck_chain(pem: bytes) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except X509_ERRORS as exc:
        raise EvidenceError(f"the PCK certificate chain in the quote is unreadable: {exc}") from None
    return [force_parse(c, "PCK chain certificate") for c in certs]


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else name.rfc4514_string()


def verify_pck_chain(chain: list[x509.Certificate], root: x509.Certificate, now: datetime) -> list[Check]:
    """Leaf PCK -> PCK Platform/Processor CA -> root; the root must be the pinned one."""
    if len(chain) < 2:
        return [failed("tdx.pck-chain", f"the PCK chain has {len(chain)} certificate(s); expected leaf, "
                                        "intermediate and root")]
    pinned = fingerprint(root)
    if chain[-1].subject == chain[-1].issuer:
        if fingerprint(chain[-1]) != pinned:
            return [failed("tdx.pck-chain", f"the chain ends in '{_cn(chain[-1].subject)}' "
                                            f"{fingerprint(chain[-1])}, not the pinned root {pinned}")]
        chain = chain[:-1]
    path = [*chain, root]
    for child, parent in zip(path, path[1:], strict=False):
        if child.issuer != parent.subject:
            return [failed("tdx.pck-chain", f"'{_cn(child.subject)}' is issued by '{_cn(child.issuer)}', "
                                            f"not by '{_cn(parent.subject)}'")]
        try:
            child.verify_directly_issued_by(parent)
        except (InvalidSignature, ValueError, TypeError):
            return [failed("tdx.pck-chain", f"the signature on '{_cn(child.subject)}' does not verify with "
                                            f"'{_cn(parent.subject)}'")]
    for cert in path:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return [failed("tdx.pck-chain", f"'{_cn(cert.subject)}' is not valid at {now.isoformat()} "
                                            f"({cert.not_valid_before_utc.isoformat()} to "
                                            f"{cert.not_valid_after_utc.isoformat()})")]
    leaf = path[0]
    try:
        leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    except x509.ExtensionNotFound:
        return [failed("tdx.pck-chain", "the PCK leaf has no Intel SGX extension: it is not a PCK certificate")]
    return [passed("tdx.pck-chain", " -> ".join(repr(_cn(c.subject)) for c in path) + f" (root {pinned[:16]}…)")]


def verify_quote_signatures(quote: TdxQuote, pck_leaf: x509.Certificate) -> list[Check]:
    checks: list[Check] = []
    leaf_key = pck_leaf.public_key()
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey):
        return [failed("tdx.qe-report-signature", "the PCK leaf key is not an EC key")]
    ok = verify_raw_signature(leaf_key, quote.qe_report_signature, quote.qe_report.raw)
    checks.append((passed if ok else failed)("tdx.qe-report-signature", "the PCK key signed the QE report" if ok
                                             else "the QE report signature does not verify with the PCK leaf key"))
    expected = hashlib.sha256(quote.attest_key + quote.qe_auth_data).digest() + bytes(32)
    ok = quote.qe_report.report_data == expected
    checks.append((passed if ok else failed)(
        "tdx.qe-binding", "QE REPORTDATA = SHA-256(attestation key || QE auth data)" if ok else
        "QE REPORTDATA does not bind this attestation key and auth data: the key was swapped"))
    try:
        att_key = ecdsa_p256_key(quote.attest_key)
        ok = verify_raw_signature(att_key, quote.signature, quote.signed)
    except EvidenceError:
        ok = False
    checks.append((passed if ok else failed)(
        "tdx.quote-signature", "the attestation key signed the quote header and TD report" if ok else
        "the quote signature does not verify: the header or TD report was altered"))
    return checks


def _dcap_qvl() -> Any:
    try:
        import dcap_qvl
    except ImportError:
        return None
    return dcap_qvl


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).removeprefix("Verification failed: ").split())  # one line for logs


def verify_collateral(quote: TdxQuote, collateral_json: bytes, root: x509.Certificate, now: datetime,
                      chain: list[x509.Certificate] | None = None) -> tuple[Check, CollateralResult | None]:
    """Intel's TCB verdict through dcap-qvl: TCB info, QE identity, CRLs and their chains at
    *now*. dcap-qvl's own rule on the TD's DEBUG and SEPT_VE_DISABLE bits is not applied: those
    are policy (tcb_verdict.py says how the verdict is had without it). *chain* is the quote's
    PCK chain, already parsed by the caller."""
    dcap_qvl = _dcap_qvl()
    if dcap_qvl is None:
        return failed("tdx.collateral", "dcap-qvl is not installed, so the TCB cannot be evaluated; install "
                                        "the 'tdx' extra (pip install 'ratls-gateway[tdx]')"), None
    try:
        text = collateral_json.decode()
        doc = json.loads(text)
        collateral = dcap_qvl.QuoteCollateralV3.from_json(text)
    except (UnicodeDecodeError, ValueError) as exc:
        return failed("tdx.collateral", f"collateral is not valid QuoteCollateralV3 JSON: {exc}"), None
    left_to_policy = None
    try:
        report = dcap_qvl.verify_with_root_ca(quote.raw, collateral, root.public_bytes(Encoding.DER),
                                              int(now.timestamp()))
    except ValueError as exc:
        reason = _one_line(exc)
        if reason not in LEFT_TO_POLICY or not isinstance(doc, dict):
            return failed("tdx.collateral", f"dcap-qvl rejected the quote with this collateral: {reason}"), None
        try:
            report = verdict_without_attribute_rule(dcap_qvl, quote, chain or load_pck_chain(quote.pck_chain_pem),
                                                    doc, now)
        except (ValueError, KeyError, TypeError, EvidenceError, x509.ExtensionNotFound) as again:
            return failed("tdx.collateral", f"dcap-qvl rejected the quote with this collateral: {reason}; "
                                            f"without that TD-attribute rule: {_one_line(again)}"), None
        left_to_policy = reason
    detail = json.loads(report.to_json())
    tcb_info = json.loads(doc.get("tcb_info", "{}"))
    result = CollateralResult(
        status=report.status, advisory_ids=list(report.advisory_ids),
        qe_status=(detail.get("qe_status") or {}).get("status"),
        platform_status=(detail.get("platform_status") or {}).get("status"),
        tcb_eval_data_number=tcb_info.get("tcbEvaluationDataNumber"),
        tcb_info_next_update=tcb_info.get("nextUpdate"),
        details={"fmspc": tcb_info.get("fmspc"), "ppid": detail.get("ppid")})
    advisories = ", ".join(result.advisory_ids) or "none"
    note = "" if left_to_policy is None else (f"; the TD's DEBUG and SEPT_VE_DISABLE bits are left to the policy "
                                              f"(dcap-qvl's own rule said: {left_to_policy})")
    return passed("tdx.collateral", f"TCB info, QE identity and CRLs verify (TCB status {result.status}, "
                                    f"advisories: {advisories}){note}"), result


@dataclass(frozen=True)
class VerifiedTdx:
    """What TDX appraisal reads: the quote, and Intel's TCB verdict when collateral verified."""

    quote: TdxQuote
    collateral: CollateralResult | None = None


def verify_tdx(quote: TdxQuote, collateral: bytes | FetchFailed | None, trust: TdxTrust, now: datetime,
               *, platform: str = "tdx") -> VerifiedEvidence[VerifiedTdx]:
    """Every TDX authenticity check. *collateral* is the QuoteCollateralV3 JSON, or why fetching
    it failed, or None (none carried or supplied, and fetching is off)."""
    checks: list[Check] = []
    result = VerifiedEvidence(platform=platform, report_data=quote.body.report_data, checks=checks,
                              parsed=VerifiedTdx(quote),
                              simulated=trust.simulated, measurements=quote.measurements(),
                              tcb={"tee_tcb_svn": quote.body.tee_tcb_svn.hex()}, summary=quote.summary())
    checks.append(passed("tdx.quote.parse", f"quote v{quote.header.version}, {quote.body_name} body, "
                                            f"{len(quote.raw)} bytes ({quote.trailing} trailing)"))
    if quote.header.qe_vendor_id != INTEL_QE_VENDOR_ID:
        checks.append(failed("tdx.qe-vendor", f"QE vendor id {quote.header.qe_vendor_id.hex()} is not Intel's"))
    try:
        chain = load_pck_chain(quote.pck_chain_pem)
    except EvidenceError as exc:
        checks.append(failed("tdx.pck-chain", exc.message))
        return result
    checks.extend(verify_pck_chain(chain, trust.root, now))
    if chain:
        checks.extend(verify_quote_signatures(quote, chain[0]))
    if isinstance(collateral, FetchFailed):
        checks.append(failed("tdx.collateral", "no collateral (TCB info, QE identity, CRLs) was carried or "
                                               f"supplied, and fetching it failed: {collateral.explain()}"))
        return result
    if collateral is None:
        checks.append(failed("tdx.collateral", "no collateral (TCB info, QE identity, CRLs) was carried or "
                                               "supplied, so the TCB cannot be evaluated; pass --collateral, "
                                               "let the gateway embed it, or allow fetching (--online)"))
        return result
    check, coll = verify_collateral(quote, collateral, trust.root, now, chain)
    checks.append(check)
    if coll is not None:
        result.parsed = VerifiedTdx(quote, coll)
        result.tcb.update({"status": coll.status, "advisory_ids": coll.advisory_ids, "qe_status": coll.qe_status,
                           "platform_status": coll.platform_status,
                           "tcb_eval_data_number": coll.tcb_eval_data_number,
                           "collateral_next_update": coll.tcb_info_next_update, **coll.details})
    return result
