"""Verifying an NVIDIA RIM: its one enveloped XML-DSig, its KeyInfo chain to the pinned RIM root,
and its version and product against the GPU's report.

Trust is decided here, never by signxml: we check the document's signature *structure* (exactly
NVIDIA's algorithms, one Reference covering the whole document), verify the KeyInfo chain
ourselves at an explicit time, and only then hand signxml the signer certificate to check the
cryptography with. The RIM's values are read from the document signxml returns as signed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.exceptions import SignXMLException

from ...appraisal import Check, failed, passed
from ...errors import EvidenceError
from ...pinned import pinned_root
from .rim import DS_NS, ds, hardened_parser, keyinfo_certificates, read_document, rim_from_element
from .types import Rim, RimKind, VerifiedRim

# SHA-256 of the DER of "NVIDIA CoRIM signing Root CA" (roots/corim_signing_root.pem).
RIM_ROOT_SHA256 = "12977b5115acb0381179279fffeb5a8c4d264971ebb32298023a465fa41df5d1"
MAX_CHAIN = 8

C14N_11 = CanonicalizationMethod.CANONICAL_XML_1_1.value
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
ECDSA_SHA384 = SignatureMethod.ECDSA_SHA384.value
SHA384 = DigestAlgorithm.SHA384.value

# Everything signxml, lxml and cryptography raise for a signature that does not verify.
_SIGNATURE_ERRORS = (SignXMLException, InvalidSignature, etree.LxmlError, ValueError, TypeError)


def shipped_rim_root() -> x509.Certificate:
    """The bundled NVIDIA RIM root, refused unless it is byte for byte the pinned one."""
    return pinned_root(__package__, "roots/corim_signing_root.pem", RIM_ROOT_SHA256, "NVIDIA RIM root")


def verify_rim(xml: bytes, kind: RimKind, roots: Sequence[x509.Certificate], now: datetime, *,
               expected_version: str | None, expected_product: str | None) -> VerifiedRim:
    """Checks ``gpu.<kind>-rim.{parse,chain,signature,version,product}``; ``rim`` is set only when
    the signature verified under a chain to one of *roots* valid at *now*. ``version`` and
    ``product`` are checked only when expected values are given (the caller's report fields)."""
    prefix = f"gpu.{kind.value}-rim"
    now = _utc(now)
    try:
        document = read_document(xml, f"{kind.value} RIM")
        chain = keyinfo_certificates(document)
    except EvidenceError as exc:
        return VerifiedRim(kind, None, [failed(f"{prefix}.parse", str(exc))])
    chain_check = verify_chain(chain, roots, now, f"{prefix}.chain")
    signed, signature_check = _verify_signature(xml, document, chain, now, f"{prefix}.signature")
    checks = [chain_check, signature_check]
    if signed is None:
        return VerifiedRim(kind, None, checks)
    try:
        rim = rim_from_element(signed, chain)
    except EvidenceError as exc:
        return VerifiedRim(kind, None, [*checks, failed(f"{prefix}.parse", str(exc))])
    checks.insert(0, passed(f"{prefix}.parse", f"SWID tag {rim.tag_id[:16]}..., {len(rim.measurements)} measurements"))
    if not chain_check.ok:
        return VerifiedRim(kind, None, checks)  # signed, but not by anyone we trust: no values
    checks.extend(_content_checks(rim, prefix, expected_version, expected_product))
    return VerifiedRim(kind, rim, checks)


def _content_checks(rim: Rim, prefix: str, version: str | None, product: str | None) -> list[Check]:
    checks = []
    if version is not None:
        # NVIDIA's Python verifier lower-cases, its C++ SDK upper-cases: compare case-insensitively.
        if rim.version.casefold() == version.casefold():
            checks.append(passed(f"{prefix}.version", f"RIM version {rim.version} is the GPU's"))
        else:
            checks.append(failed(f"{prefix}.version", f"RIM is for version {rim.version}, the GPU reports {version}"))
    if product is not None:
        # NVIDIA does not check this: a validly signed RIM for another chip would otherwise pass.
        if rim.product.casefold() == product.casefold():
            checks.append(passed(f"{prefix}.product", f"RIM product {rim.product} is the GPU's chip"))
        else:
            checks.append(failed(f"{prefix}.product", f"RIM is for {rim.product}, the GPU is a {product}"))
    return checks


def _verify_signature(xml: bytes, document: etree._Element, chain: Sequence[x509.Certificate], now: datetime,
                      name: str) -> tuple[etree._Element | None, Check]:
    """The signed document (Signature removed) and the check; None when it did not verify."""
    problem = signature_structure_problem(document)
    if problem is not None:
        return None, failed(name, problem)
    if not chain:
        return None, failed(name, "KeyInfo has no X509Certificate to verify the signature with")
    leaf = chain[0]
    # Certificate validity at `now` is the chain check's verdict (it names the certificate).
    # signxml checks the leaf's validity too; clamping its clock into the leaf's window keeps an
    # expiry from being reported as a bad signature. No trust is lost: `rim` is only returned
    # when the chain check passed, and then `now` is inside the window and this is `now`.
    clock = min(max(now, leaf.not_valid_before_utc), leaf.not_valid_after_utc)
    config = SignatureConfiguration(
        require_x509=True, location="./", expect_references=1,
        signature_methods=frozenset({SignatureMethod.ECDSA_SHA384}),
        digest_algorithms=frozenset({DigestAlgorithm.SHA384}),
        ignore_ambiguous_key_info=False, verification_time=clock,
        default_reference_c14n_method=CanonicalizationMethod.CANONICAL_XML_1_1)
    try:
        result = XMLVerifier().verify(bytes(xml), x509_cert=leaf, parser=hardened_parser(), expect_config=config)
    except _SIGNATURE_ERRORS as exc:
        reason = str(exc).rstrip(": ") or type(exc).__name__  # cryptography's InvalidSignature has no text
        return None, failed(name, f"XML-DSig does not verify with the KeyInfo signer key: {reason}")
    if isinstance(result, list):
        return None, failed(name, "signxml returned several references")
    try:
        # Our own hardened parse of exactly the bytes the digest covered (the enveloped transform
        # removed the Signature): nothing outside them can reach the values we read.
        signed = read_document(result.signed_data, "signed RIM")
    except EvidenceError as exc:
        return None, failed(name, f"the signed part of the document cannot be read: {exc}")
    return signed, passed(name, f"ecdsa-sha384 XML-DSig over the whole document by {_cn(leaf)}")


def signature_structure_problem(document: etree._Element) -> str | None:
    """Why the document's signature is not NVIDIA's exact shape, or None. This is what stops
    signature wrapping: one Signature, a child of the root, one Reference with URI="" (the whole
    document), the enveloped + C14N 1.1 transforms, SHA-384, ecdsa-sha384, no Object, no KeyValue."""
    signatures = list(document.iter(ds("Signature")))
    if len(signatures) != 1:
        return f"document has {len(signatures)} ds:Signature elements, expected exactly one"
    signature = signatures[0]
    if signature.getparent() is not document:
        return "ds:Signature is not a child of the document's root element"
    for node in signature.iter():
        if not isinstance(node.tag, str):
            return "ds:Signature contains a comment or processing instruction"
    problem = _children(signature, ["SignedInfo", "SignatureValue", "KeyInfo"])
    if problem:
        return problem
    signed_info, _, key_info = list(signature)
    return (_children(signed_info, ["CanonicalizationMethod", "SignatureMethod", "Reference"])
            or _algorithm(signed_info[0], C14N_11) or _algorithm(signed_info[1], ECDSA_SHA384)
            or _reference_problem(signed_info[2]) or _key_info_problem(key_info))


def _reference_problem(reference: etree._Element) -> str | None:
    if dict(reference.attrib) != {"URI": ""}:
        return f"Reference must have exactly URI=\"\" (the whole document), has {dict(reference.attrib)}"
    problem = _children(reference, ["Transforms", "DigestMethod", "DigestValue"])
    if problem:
        return problem
    transforms, digest_method, _ = list(reference)
    problem = _children(transforms, ["Transform", "Transform"])
    if problem:
        return problem
    return (_algorithm(transforms[0], ENVELOPED) or _algorithm(transforms[1], C14N_11)
            or _algorithm(digest_method, SHA384))


def _key_info_problem(key_info: etree._Element) -> str | None:
    problem = _children(key_info, ["X509Data"])
    if problem:
        return problem
    certs = list(key_info[0])
    if not certs or any(c.tag != ds("X509Certificate") for c in certs):
        return "KeyInfo/X509Data must hold X509Certificate elements only"
    return None


def _children(parent: etree._Element, expected: list[str]) -> str | None:
    # Comments were refused already, so every child has a tag; a foreign element keeps its full name.
    names = [etree.QName(child).localname if etree.QName(child).namespace == DS_NS else str(child.tag)
             for child in parent]
    if names != expected:
        return f"ds:{etree.QName(parent).localname} has children {names}, expected {expected}"
    return None


def _algorithm(element: etree._Element, expected: str) -> str | None:
    algorithm = element.get("Algorithm")
    name = etree.QName(element).localname
    if algorithm != expected or len(element) or dict(element.attrib) != {"Algorithm": expected}:
        return f"ds:{name} Algorithm is {algorithm!r}, only {expected} is accepted"
    return None


def verify_chain(chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], now: datetime,
                 name: str) -> Check:
    """The KeyInfo chain, leaf first, up to one of *roots*. Certificates after the one a root
    issued must be byte for byte that root (the document's own copy of it) and are ignored: trust
    comes only from *roots*. Every certificate, the root included, must be valid at *now*."""
    now = _utc(now)
    if not chain:
        return failed(name, "KeyInfo has no certificates")
    if len(chain) > MAX_CHAIN:
        return failed(name, f"KeyInfo has {len(chain)} certificates, more than {MAX_CHAIN}")
    path: list[x509.Certificate] = [chain[0]]
    anchor = _issuing_root(chain[0], roots)
    for position, cert in enumerate(chain[1:], start=1):
        if anchor is not None:
            if cert.public_bytes(Encoding.DER) != anchor.public_bytes(Encoding.DER):
                return failed(name, f"certificate {position} ({_cn(cert)}) follows the root but is not a copy of "
                                    "the pinned root")
            continue
        problem = _issued_by(path[-1], cert, len(path) - 1)
        if problem:
            return failed(name, f"certificate {position - 1} ({_cn(path[-1])}): {problem}")
        path.append(cert)
        anchor = _issuing_root(cert, roots)
    if anchor is None:
        return failed(name, f"chain ends at {_cn(path[-1])}, issued by {path[-1].issuer.rfc4514_string()}, "
                            "which is not a trusted RIM root")
    problem = _issued_by(path[-1], anchor, len(path) - 1)
    if problem:
        return failed(name, f"certificate {len(path) - 1} ({_cn(path[-1])}): {problem}")
    if not _may_sign(chain[0]):
        return failed(name, f"the signer {_cn(chain[0])} has a keyUsage without digitalSignature")
    for cert in [*path, anchor]:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return failed(name, f"{_cn(cert)} is not valid at {now.isoformat()} (valid "
                                f"{cert.not_valid_before_utc.isoformat()} .. {cert.not_valid_after_utc.isoformat()})")
    return passed(name, f"{' <- '.join(_cn(c) for c in path)} <- {_cn(anchor)} (sha256 {_sha256(anchor)[:16]}...), "
                        f"valid at {now.isoformat()}")


def _issuing_root(cert: x509.Certificate, roots: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The root that signed *cert* (its CA flags are checked by the caller, with the path length)."""
    from .verify_cache import signed_by
    for root in roots:
        # names first (free), then the signature, cached: the chain check asks again for the same pair
        if cert.issuer == root.subject and signed_by(cert, root):
            return root
    return None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate, below: int) -> str | None:
    """Why *issuer* did not issue *cert*, or None; *below* = CA certificates between them and the leaf."""
    from .verify_cache import signed_by
    if not signed_by(cert, issuer):
        return f"not signed by {_cn(issuer)}"
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return f"issuer {_cn(issuer)} has no basicConstraints (not a CA)"
    if not constraints.ca:
        return f"issuer {_cn(issuer)} is not a CA"
    if constraints.path_length is not None and below > constraints.path_length:
        return f"issuer {_cn(issuer)} allows {constraints.path_length} CA certificates below it, the chain has {below}"
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    return None if usage.key_cert_sign else f"issuer {_cn(issuer)} may not sign certificates (keyUsage)"


def _may_sign(leaf: x509.Certificate) -> bool:
    try:
        return bool(leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature)
    except x509.ExtensionNotFound:
        return True


def _utc(now: datetime) -> datetime:
    """A naive time means UTC, as everywhere in this project (``timeutil.parse_time``)."""
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def _sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
