"""SEV-SNP authenticity: report signature, VCEK/VLEK chain to a pinned AMD root, the
key's certificate extensions against the report, and revocation. No policy here.

Every failure is a failed Check with a precise reason; nothing short-circuits to "ok".
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ...appraisal import Check, failed, passed
from ...errors import EvidenceError
from ...evidence import FetchFailed, VerifiedEvidence
from .abi import Product, SigningKey, SnpReport
from .certs import (
    EndorsementKeyInfo,
    ProductRoots,
    endorsement_key_info,
    fingerprint,
    product_of_key,
    shipped_roots,
)


class SignatureCache:
    """Remembers which (issuer, subject) certificate signatures were already verified.

    Certificate signatures never change their validity, so caching them is sound; validity
    windows and revocation are re-checked on every call against the caller's ``now``.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._ok: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._max = max_entries

    def verified(self, issuer: x509.Certificate, subject: x509.Certificate) -> bool:
        key = (fingerprint(issuer), fingerprint(subject))
        with self._lock:
            if key in self._ok:
                return True
        try:
            subject.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            return False
        with self._lock:
            if len(self._ok) >= self._max:
                self._ok.clear()
            self._ok.add(key)
        return True


class NoCache(SignatureCache):
    def verified(self, issuer: x509.Certificate, subject: x509.Certificate) -> bool:
        try:
            subject.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            return False
        return True


@dataclass
class SnpTrust:
    """Trust anchors and options for SNP verification.

    ``roots``: pinned ARK (+ default ASK/ASVK) per product. ``crls``: DER/PEM CRLs issued by
    an ARK; when ``require_crl`` is set a missing CRL fails verification.
    """

    roots: dict[Product, ProductRoots] = field(default_factory=shipped_roots)
    crls: list[x509.CertificateRevocationList] = field(default_factory=list)
    require_crl: bool = False
    simulated: bool = False
    cache: SignatureCache = field(default_factory=SignatureCache)


@dataclass
class KeyMaterial:
    """The endorsement key (VCEK/VLEK) and optional intermediates supplied with evidence."""

    key_cert: x509.Certificate
    intermediates: list[x509.Certificate] = field(default_factory=list)


def _within(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else name.rfc4514_string()


def verify_report_signature(report: SnpReport, key_cert: x509.Certificate) -> Check:
    public_key = key_cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp384r1":
        return failed("snp.report.signature", "endorsement key is not an EC P-384 key")
    signature = encode_dss_signature(report.signature_r, report.signature_s)
    try:
        public_key.verify(signature, report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return failed("snp.report.signature",
                      f"ECDSA P-384 signature over bytes 0x000-0x29F does not verify with the "
                      f"{_cn(key_cert.subject)} key: the report was altered or signed by another chip")
    return passed("snp.report.signature", f"ECDSA P-384/SHA-384 signature verifies with {_cn(key_cert.subject)}")


def _choose_intermediate(roots: ProductRoots, kind: str, supplied: list[x509.Certificate],
                         key_cert: x509.Certificate) -> x509.Certificate:
    """Prefer a supplied intermediate (it must still chain to the pinned ARK), else the shipped one."""
    for cert in supplied:
        if cert.subject == key_cert.issuer:
            return cert
    if supplied:
        return supplied[0]
    shipped = roots.asvk if kind == "vlek" else roots.ask
    return shipped if shipped is not None else roots.ask


def verify_chain(key_cert: x509.Certificate, info: EndorsementKeyInfo, product: Product,
                 supplied: list[x509.Certificate], trust: SnpTrust, now: datetime) -> list[Check]:
    roots = trust.roots.get(product)
    if roots is None:
        return [failed("snp.chain", f"no trusted AMD root for product {product.title}")]
    checks: list[Check] = []
    supplied_arks = [c for c in supplied if c.subject == c.issuer]
    for ark in supplied_arks:
        if fingerprint(ark) != fingerprint(roots.ark):
            checks.append(failed("snp.trust-root",
                                 f"supplied root {_cn(ark.subject)} (sha256 {fingerprint(ark)[:16]}...) is not the "
                                 f"pinned {_cn(roots.ark.subject)}"))
            return checks
    intermediate = _choose_intermediate(roots, info.kind, [c for c in supplied if c.subject != c.issuer], key_cert)
    ark = roots.ark
    label = f"{_cn(ark.subject)} -> {_cn(intermediate.subject)} -> {_cn(key_cert.subject)}"
    if not trust.cache.verified(ark, ark):
        checks.append(failed("snp.chain", f"pinned root {_cn(ark.subject)} is not validly self-signed"))
    elif not trust.cache.verified(ark, intermediate):
        checks.append(failed("snp.chain", f"{_cn(intermediate.subject)} is not signed by {_cn(ark.subject)} "
                                          f"(wrong product chain, or a forged intermediate)"))
    elif not trust.cache.verified(intermediate, key_cert):
        checks.append(failed("snp.chain", f"{_cn(key_cert.subject)} is not signed by {_cn(intermediate.subject)} "
                                          f"(issuer is {_cn(key_cert.issuer)}): wrong product chain or forged key"))
    else:
        expired = [c for c in (ark, intermediate, key_cert) if not _within(c, now)]
        if expired:
            c = expired[0]
            window = f"{c.not_valid_before_utc.isoformat()} to {c.not_valid_after_utc.isoformat()}"
            checks.append(failed("snp.chain", f"{_cn(c.subject)} is not valid at {now.isoformat()} (valid {window})"))
        else:
            checks.append(passed("snp.chain", f"{label}, all valid at {now.isoformat()}"))
    checks.extend(_revocation(intermediate, key_cert, ark, trust, now))
    return checks


def _revocation(intermediate: x509.Certificate, key_cert: x509.Certificate, ark: x509.Certificate,
                trust: SnpTrust, now: datetime) -> list[Check]:
    relevant = [crl for crl in trust.crls if crl.issuer == ark.subject]
    if not relevant:
        if trust.require_crl:
            return [failed("snp.crl", f"no CRL from {_cn(ark.subject)} supplied and the trust settings require one")]
        return []
    for crl in relevant:
        if not crl.is_signature_valid(ark.public_key()):  # type: ignore[arg-type]
            return [failed("snp.crl", f"CRL claiming issuer {_cn(ark.subject)} has an invalid signature")]
        next_update = crl.next_update_utc
        if next_update is not None and next_update < now:
            return [failed("snp.crl", f"CRL from {_cn(ark.subject)} expired at {next_update.isoformat()}")]
        # AMD's CRL lists revoked ASK/ASVK certificates; VCEKs are not individually revoked.
        for cert in (intermediate, key_cert):
            revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if revoked is not None and cert.issuer == ark.subject:
                return [failed("snp.crl", f"{_cn(cert.subject)} serial {cert.serial_number:#x} is revoked")]
    return [passed("snp.crl", f"{_cn(intermediate.subject)} not revoked by {_cn(ark.subject)}'s CRL")]


def check_key_against_report(report: SnpReport, info: EndorsementKeyInfo, product: Product) -> list[Check]:
    checks: list[Check] = []
    signing = report.signer_info.signing_key
    if signing.value != info.kind:
        checks.append(failed("snp.signing-key", f"report says it is signed by the {signing.value.upper()} "
                                                f"but the certificate given is a {info.kind.upper()}"))
    else:
        checks.append(passed("snp.signing-key", f"report signed by a {info.kind.upper()}"))
    report_product = report.product
    if report_product is not None and report_product != product:
        checks.append(failed("snp.product", f"report CPUID says {report_product.title} but the "
                                            f"{info.kind.upper()} is for {product.title}"))
    else:
        named = f" ({info.product_name})" if info.product_name else ""
        checks.append(passed("snp.product", f"{product.title}{named}"))
    tcb = report.reported_tcb
    expected = info.tcb()
    if product == Product.TURIN and "fmc" not in expected:
        checks.append(failed("snp.tcb-match", "Turin endorsement key lacks the fmcSPL extension"))
    else:
        mismatched = [name for name, value in expected.items() if tcb.components().get(name) != value]
        missing = [n for n in ("bl", "tee", "snp", "ucode") if n not in expected]
        if missing:
            checks.append(failed("snp.tcb-match", f"{info.kind.upper()} lacks SPL extensions: {', '.join(missing)}"))
        elif mismatched:
            detail = ", ".join(f"{n}: cert {expected[n]} vs report {tcb.components().get(n)}" for n in mismatched)
            checks.append(failed("snp.tcb-match", f"REPORTED_TCB differs from the {info.kind.upper()}: {detail}"))
        else:
            checks.append(passed("snp.tcb-match", f"REPORTED_TCB {tcb} matches the {info.kind.upper()}"))
    if info.kind == "vcek":
        if info.hwid is None:
            checks.append(failed("snp.hwid-match", "VCEK has no hwID extension"))
        elif report.signer_info.mask_chip_key:
            checks.append(failed("snp.hwid-match", "report masks CHIP_ID (MASK_CHIP_KEY) so the VCEK cannot be "
                                                   "tied to this chip"))
        else:
            want = report.chip_id[: len(info.hwid)]
            tail_zero = not any(report.chip_id[len(info.hwid):])
            if info.hwid == want and tail_zero and len(info.hwid) in (8, 64):
                checks.append(passed("snp.hwid-match", f"CHIP_ID matches VCEK hwID ({len(info.hwid)} bytes)"))
            else:
                checks.append(failed("snp.hwid-match", "CHIP_ID in the report differs from the VCEK hwID: the "
                                                       "VCEK belongs to another chip"))
    return checks


@dataclass(frozen=True)
class VerifiedSnp:
    """What SNP appraisal reads: the report, and the product line verification established
    (from the endorsement key; a v2 report does not state it)."""

    report: SnpReport
    product: Product | None = None


def verify_snp(report: SnpReport, keys: KeyMaterial | FetchFailed | None, trust: SnpTrust, now: datetime,
               *, platform: str = "sev-snp") -> VerifiedEvidence[VerifiedSnp]:
    """Run every SNP authenticity check and return what was established. *keys* is the
    endorsement key, or why fetching it failed, or None (none given and none fetched)."""
    checks: list[Check] = []
    measurements = {"measurement": report.measurement.hex()}
    tcb = {"reported": report.reported_tcb.components(), "committed": report.committed_tcb.components(),
           "firmware": "{}.{}.{}".format(*report.current_version)}
    summary = report.summary()
    result = VerifiedEvidence(platform=platform, report_data=report.report_data, checks=checks,
                              parsed=VerifiedSnp(report, report.product),
                              simulated=trust.simulated, measurements=measurements, tcb=tcb, summary=summary)
    checks.append(passed("snp.report.parse", f"ATTESTATION_REPORT v{report.version}, {len(report.raw)} bytes"))
    if report.signer_info.signing_key == SigningKey.NONE:
        checks.append(failed("snp.signing-key", "report is unsigned (SIGNING_KEY = none)"))
        return result
    kind = report.signer_info.signing_key.value.upper()
    if isinstance(keys, FetchFailed):
        checks.append(failed("snp.endorsement-key", f"no {kind} certificate was supplied, and fetching it failed: "
                                                   f"{keys.explain()}"))
        return result
    if keys is None:
        checks.append(failed("snp.endorsement-key", f"no {kind} certificate was supplied or fetched"))
        return result
    try:
        info = endorsement_key_info(keys.key_cert)
    except EvidenceError as exc:
        checks.append(failed("snp.endorsement-key", f"unreadable AMD extension: {exc.message}"))
        return result
    product = product_of_key(keys.key_cert, info) or report.product
    if product is None:
        checks.append(failed("snp.product", "cannot tell the product line (no productName, issuer or CPUID)"))
        return result
    summary["product"] = product.value
    result.parsed = VerifiedSnp(report, product)
    summary["endorsement_key"] = {"kind": info.kind, "product_name": info.product_name,
                                  "csp_id": info.csp_id, "tcb": info.tcb(),
                                  "sha256": fingerprint(keys.key_cert)}
    checks.extend(verify_chain(keys.key_cert, info, product, keys.intermediates, trust, now))
    checks.extend(check_key_against_report(report, info, product))
    checks.append(verify_report_signature(report, keys.key_cert))
    return result
