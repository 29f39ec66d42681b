"""The GPU's device certificate chain: loading, what the leaf says (FWID, chip, UEID), the
pinned NVIDIA Device Identity root, and chain verification.

Chain (leaf first, P-384/SHA-384, device certificates valid until 9999):
``<chip> A01 GSP FMC LF`` (signs reports) <- ``<chip> A01 GSP BROM`` (per device) <-
``NVIDIA <chip> Provisioner ICA ..`` <- ``NVIDIA <chip> Identity`` <- ``NVIDIA Device Identity CA``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ... import der
from ...appraisal import Check, failed, passed
from ...errors import EvidenceError, UsageError
from ...pinned import pinned_root
from ...x509util import X509_ERRORS, fingerprint, force_parse
from .types import DIGEST_LEN, GpuArch

CHECK = "gpu.chain"
MAX_CHAIN_LEN = 8  # NVIDIA's chains hold 5 certificates
MAX_CHAIN_PEM = 256 * 1024
PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
# SHA-256 of the DER of "NVIDIA Device Identity CA" (NVIDIA's verifiers ship the same file).
# A shipped file that does not match is refused, so a tampered install cannot widen trust.
DEVICE_IDENTITY_ROOT_SHA256 = "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"
OID_HOPPER_FWID = "2.23.133.5.4.1"  # NVIDIA's Hopper layout: SEQUENCE{INTEGER, SPKI, FWID}
OID_DICE_TCB_INFO = "2.23.133.5.4.1.1"  # Blackwell: TCG DiceTcbInfo
TAG_OID = 0x06
TAG_SEQUENCE = 0x30
TAG_DICE_FWIDS = 0xA6  # DiceTcbInfo fwids [6] IMPLICIT SEQUENCE OF FWID
SHA384_OID_DER = bytes.fromhex("608648016503040202")  # 2.16.840.1.101.3.4.2.2
_Ext = TypeVar("_Ext", bound=x509.ExtensionType)
_CHIP = re.compile(r"G[A-Z]\d{2,3}[A-Z]?")
_IDENTITY_CN = re.compile(r"NVIDIA (G[A-Z]\d{2,3}[A-Z]?) Identity")


# --- loading -----------------------------------------------------------------------------------

def parse_chain_pem(data: bytes) -> list[x509.Certificate]:
    """Leaf-first PEM certificates, every field decoded now (a malformed one is a typed error)."""
    if not isinstance(data, bytes | bytearray):
        raise EvidenceError("a GPU certificate chain must be bytes")
    if len(data) > MAX_CHAIN_PEM:
        raise EvidenceError(f"GPU certificate chain is {len(data)} bytes; refusing anything over {MAX_CHAIN_PEM}")
    count = bytes(data).count(PEM_BEGIN)
    if count == 0:
        raise EvidenceError("GPU certificate chain holds no PEM certificate",
                            hint="give the leaf-first PEM chain the GPU driver returns")
    if count > MAX_CHAIN_LEN:
        raise EvidenceError(f"GPU certificate chain holds {count} certificates; refusing more than {MAX_CHAIN_LEN}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd-but-readable encodings warn; they are judged by verification
        try:
            certs = x509.load_pem_x509_certificates(bytes(data))
        except X509_ERRORS as exc:
            raise EvidenceError(f"GPU certificate chain is not readable PEM ({exc})") from None
        return [force_parse(c, f"GPU chain certificate {i}") for i, c in enumerate(certs)]


def device_identity_root() -> x509.Certificate:
    """NVIDIA's Device Identity CA from the package, checked against its pinned fingerprint."""
    return pinned_root(__package__, "roots/device_identity_root.pem", DEVICE_IDENTITY_ROOT_SHA256,
                       "NVIDIA Device Identity root")


def device_roots() -> list[x509.Certificate]:
    """The trust anchors for genuine NVIDIA GPUs (Hopper and Blackwell share one root)."""
    return [device_identity_root()]


# --- what the certificates say -----------------------------------------------------------------

def cn(cert: x509.Certificate) -> str:
    return name_cn(cert.subject)


def name_cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else name.rfc4514_string()


def leaf_fwid(cert: x509.Certificate) -> tuple[bytes | None, GpuArch | None]:
    """The firmware id (48 B) the leaf certifies, and the architecture its extension implies:
    Hopper ``2.23.133.5.4.1``, Blackwell ``2.23.133.5.4.1.1`` (DiceTcbInfo). (None, None): neither."""
    exts = {e.oid.dotted_string: e.value.value for e in cert.extensions
            if isinstance(e.value, x509.UnrecognizedExtension)}
    hopper, dice = exts.get(OID_HOPPER_FWID), exts.get(OID_DICE_TCB_INFO)
    if hopper is not None and dice is not None:
        raise EvidenceError(f"{cn(cert)} carries both the Hopper FWID and the DiceTcbInfo extension")
    if hopper is not None:
        return hopper_fwid(hopper), GpuArch.HOPPER
    if dice is not None:
        return dice_tcb_fwid(dice), GpuArch.BLACKWELL
    return None, None


def _children(content: bytes, what: str) -> list[der.Tlv]:
    """The elements of a constructed DER value, which must fill it exactly."""
    out, pos = [], 0
    while pos < len(content):
        tlv = der.read_tlv(content, pos)
        out.append(tlv)
        pos = tlv.end
    if not out:
        raise EvidenceError(f"{what} is empty")
    return out


def _fwid_digest(tlv: der.Tlv, what: str) -> bytes:
    """FWID ::= SEQUENCE { hashAlg OBJECT IDENTIFIER, digest OCTET STRING } with SHA-384."""
    if tlv.tag != TAG_SEQUENCE:
        raise EvidenceError(f"{what}: FWID is not a SEQUENCE (tag {tlv.tag:#04x})")
    parts = _children(tlv.value, what)
    if [p.tag for p in parts] != [TAG_OID, der.TAG_OCTET_STRING]:
        raise EvidenceError(f"{what}: FWID is not SEQUENCE {{OID, OCTET STRING}}")
    if parts[0].value != SHA384_OID_DER:
        raise EvidenceError(f"{what}: FWID hash algorithm is not SHA-384")
    if len(parts[1].value) != DIGEST_LEN:
        raise EvidenceError(f"{what}: FWID digest is {len(parts[1].value)} bytes, expected {DIGEST_LEN}")
    return parts[1].value


def hopper_fwid(value: bytes) -> bytes:
    """The FWID digest from the DER value of the Hopper extension."""
    what = f"Hopper FWID extension {OID_HOPPER_FWID}"
    parts = _children(der.read_single(value, TAG_SEQUENCE, what), what)
    if [p.tag for p in parts] != [der.TAG_INTEGER, TAG_SEQUENCE, TAG_SEQUENCE]:
        raise EvidenceError(f"{what} is not SEQUENCE {{INTEGER, SubjectPublicKeyInfo, FWID}}")
    digest = _fwid_digest(parts[2], what)
    # NVIDIA's verifier takes the extension's last 48 bytes. Every element above fills its parent
    # exactly, so the digest is those bytes; say so rather than trust it silently.
    if digest != value[-DIGEST_LEN:]:
        raise EvidenceError(f"{what}: the FWID digest is not the extension's last {DIGEST_LEN} bytes")
    return digest


def dice_tcb_fwid(value: bytes) -> bytes | None:
    """``fwids[0]`` digest from a DER TCG DiceTcbInfo (None: it lists no fwids)."""
    what = f"DiceTcbInfo extension {OID_DICE_TCB_INFO}"
    fields = _children(der.read_single(value, TAG_SEQUENCE, what), what)
    numbers = [t.tag & 0x1F for t in fields]
    if any(t.tag & 0xC0 != 0x80 for t in fields) or numbers != sorted(set(numbers)):
        raise EvidenceError(f"{what}: fields are not context-tagged in increasing order")
    fwids = [t for t in fields if t.tag == TAG_DICE_FWIDS]
    if not fwids:
        return None
    return _fwid_digest(_children(fwids[0].value, what)[0], what)


def chip_name(chain: Sequence[x509.Certificate]) -> str | None:
    """The GPU chip the chain is for ("GH100", "GB100"): the chip word in the leaf's CN
    ("GH100 A01 GSP FMC LF"), else the one in an Identity CA's ("NVIDIA GH100 Identity")."""
    if not chain:
        return None
    for word in cn(chain[0]).upper().split():
        if _CHIP.fullmatch(word):
            return word
    for cert in chain:
        match = _IDENTITY_CN.fullmatch(cn(cert))
        if match:
            return match.group(1).upper()
    return None


def arch_of(chip: str | None, hint: GpuArch | None = None) -> GpuArch | None:
    if chip and chip.startswith("GH"):
        return GpuArch.HOPPER
    if chip and chip.startswith("GB"):
        return GpuArch.BLACKWELL
    return hint


def ueid(leaf: x509.Certificate) -> str:
    """NVIDIA's UEID claim: the leaf's serial number in decimal."""
    return str(leaf.serial_number)


def hwmodel(chain: Sequence[x509.Certificate]) -> str | None:
    """NVIDIA's hwmodel claim: the CN of certificate 1 ("GH100 A01 GSP BROM")."""
    return cn(chain[1]) if len(chain) > 1 else None


# --- verification ------------------------------------------------------------------------------

class _Broken(Exception):
    """Internal: why the chain does not verify (becomes the failed check's detail)."""


def verify_chain(chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], now: datetime) -> Check:
    """``gpu.chain``: the supplied chain leads from its leaf to one of *roots*, the only trust
    anchors. A trailing self-signed certificate is dropped only when it is byte-identical to a
    pinned root; any other supplied root is refused (it names an anchor we do not trust, and
    ignoring it would hide that). Each link: issuer/subject names, the issuer's signature
    (``verify_directly_issued_by``), CA basicConstraints, keyCertSign and path length on the
    issuer; the leaf must be an end-entity signing key. Every certificate, root included,
    must be valid at *now*."""
    if now.tzinfo is None:
        raise UsageError("verify_chain needs a timezone-aware 'now'")
    try:
        path = _device_path(list(chain), roots)
        _check_leaf(path[0])
        for i in range(len(path) - 1):
            _check_link(path[i], path[i + 1], i)
        anchor = _anchor(path[-1], roots)
        _check_link(path[-1], anchor, len(path) - 1)
        for cert in [*path, anchor]:
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise _Broken(f"{cn(cert)} is not valid at {now.isoformat()} (valid "
                              f"{cert.not_valid_before_utc.isoformat()} to {cert.not_valid_after_utc.isoformat()})")
    except _Broken as exc:
        return failed(CHECK, str(exc))
    except X509_ERRORS as exc:
        return failed(CHECK, f"a chain certificate is malformed: {exc}")
    names = " <- ".join(cn(c) for c in path)
    return passed(CHECK, f"{names} <- {cn(anchor)} (pinned root), all valid at {now.isoformat()}")


def _device_path(chain: list[x509.Certificate], roots: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """The supplied chain without its root (which must be a pinned one, byte for byte)."""
    if not roots:
        raise _Broken("no pinned root to verify the chain against")
    if not chain:
        raise _Broken("the certificate chain is empty")
    if len(chain) > MAX_CHAIN_LEN:
        raise _Broken(f"the chain holds {len(chain)} certificates; at most {MAX_CHAIN_LEN} are accepted")
    last = chain[-1]
    if last.subject == last.issuer:
        if fingerprint(last) not in {fingerprint(r) for r in roots}:
            raise _Broken(f"the chain ends in root {cn(last)} (sha256 {fingerprint(last)[:16]}...), "
                          "which is not a pinned root")
        chain = chain[:-1]
    if not chain:
        raise _Broken("the chain holds only the root: the device certificates are missing")
    for cert in chain:
        if cert.subject == cert.issuer:
            raise _Broken(f"self-issued certificate {cn(cert)} inside the chain: only its last certificate "
                          "may be a root")
    return chain


def _anchor(top: x509.Certificate, roots: Sequence[x509.Certificate]) -> x509.Certificate:
    """The pinned root that issued *top* (names match and its key verifies the signature)."""
    named = [r for r in roots if r.subject == top.issuer]
    for root in named:
        if _signed_by(top, root):
            return root
    if named:
        raise _Broken(f"the signature on {cn(top)} does not verify with the key of the pinned root {cn(named[0])}")
    raise _Broken(f"{cn(top)} is issued by {name_cn(top.issuer)}, which is not a pinned root "
                  "(certificates missing, or an untrusted chain)")


def _check_leaf(leaf: x509.Certificate) -> None:
    """The report-signing key is an end-entity key: a CA certificate in first place means the
    real leaf is missing (NVIDIA's chains: the FMC LF certificate, digitalSignature only)."""
    constraints = _extension(leaf, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        raise _Broken(f"the first certificate, {cn(leaf)}, is a CA, not the GPU's signing leaf (leaf missing?)")
    usage = _extension(leaf, x509.KeyUsage)
    if usage is not None and not usage.digital_signature:
        raise _Broken(f"the leaf {cn(leaf)} may not sign (no digitalSignature key usage)")


def _check_link(cert: x509.Certificate, issuer: x509.Certificate, below: int) -> None:
    """*issuer* issued *cert*; *below*: CA certificates between *issuer* and the leaf."""
    if cert.issuer != issuer.subject:
        raise _Broken(f"{cn(cert)} names issuer {name_cn(cert.issuer)} but is followed by {cn(issuer)} "
                      "(certificates missing or out of order)")
    constraints = _extension(issuer, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise _Broken(f"{cn(issuer)} issues {cn(cert)} but is not a CA (basicConstraints)")
    if constraints.path_length is not None and below > constraints.path_length:
        raise _Broken(f"{cn(issuer)} allows {constraints.path_length} CA(s) below it; the chain has {below}")
    usage = _extension(issuer, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        raise _Broken(f"{cn(issuer)} may not sign certificates (no keyCertSign key usage)")
    if not _signed_by(cert, issuer):
        raise _Broken(f"the signature on {cn(cert)} does not verify with the key of {cn(issuer)}")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    from .verify_cache import signed_by  # cached: the intermediates are the same on every GPU
    try:
        return signed_by(cert, issuer)
    except (InvalidSignature, *X509_ERRORS):
        return False


def _extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
