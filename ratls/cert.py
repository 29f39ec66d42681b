"""Build and parse ratls/1 certificates (DESIGN.md §3)."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
import warnings
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from . import cmw
from .claims import Claims, decode_claims
from .devices import DeviceEvidence, check_label
from .errors import EvidenceError, UsageError
from .evidence import Evidence
from .x509util import X509_ERRORS, force_parse, looks_like_pem

BACKDATE = dt.timedelta(minutes=5)
MAX_CERT_BYTES = 512 * 1024
CURVES = {"p256": ec.SECP256R1, "p384": ec.SECP384R1}


def generate_key(curve: str = "p256") -> ec.EllipticCurvePrivateKey:
    try:
        return ec.generate_private_key(CURVES[curve]())
    except KeyError:
        raise UsageError(f"unknown key curve '{curve}'", hint="use p256 or p384") from None


def spki_der(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def build_collection(claims_cbor: bytes, evidence: Evidence,
                     devices: tuple[DeviceEvidence, ...] | list[DeviceEvidence] = ()) -> cmw.CmwCollection:
    """``claims``, ``cpu``, one record per device (``gpu0``...), and ``endorsements``: the CPU's as
    records, each device's as a nested collection under the device's label."""
    items: dict[str, cmw.CmwRecord | cmw.CmwCollection] = {
        "claims": cmw.CmwRecord(cmw.MEDIA_CLAIMS, claims_cbor),
        "cpu": cmw.CmwRecord(evidence.media_type, evidence.raw),
    }
    endorsements: dict[str, cmw.CmwRecord | cmw.CmwCollection] = {
        k: cmw.CmwRecord(cmw.endorsement_media_type(k), v) for k, v in evidence.endorsements.items()}
    for device in devices:
        check_label(device.label)
        if device.label in items or device.label in endorsements:
            raise UsageError(f"device label '{device.label}' collides with another entry of the collection")
        items[device.label] = cmw.CmwRecord(device.media_type, device.raw)
        if device.endorsements:
            endorsements[device.label] = cmw.CmwCollection(None, {
                k: cmw.CmwRecord(cmw.endorsement_media_type(k), v) for k, v in device.endorsements.items()})
    if endorsements:
        items["endorsements"] = cmw.CmwCollection(None, endorsements)
    return cmw.CmwCollection(cmw.RATLS_COLLECTION_TYPE, items)


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def build_certificate(key: ec.EllipticCurvePrivateKey, claims_cbor: bytes, evidence: Evidence, *,
                      not_before: dt.datetime, not_after: dt.datetime, common_name: str,
                      sans: list[str], devices: tuple[DeviceEvidence, ...] = ()) -> x509.Certificate:
    """Self-signed certificate carrying the CMW collection in id-pe-cmw (non-critical)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ext_value = cmw.encode_extension_value(build_collection(claims_cbor, evidence, devices))
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(cmw.OID_CMW), ext_value), critical=False)
    )
    if sans:
        builder = builder.add_extension(_san(sans), critical=False)
    hash_alg = hashes.SHA384() if isinstance(key.curve, ec.SECP384R1) else hashes.SHA256()
    return builder.sign(key, hash_alg)


@dataclass(frozen=True)
class RatlsCertificate:
    cert: x509.Certificate
    collection: cmw.CmwCollection
    claims_cbor: bytes
    claims: Claims
    evidence: Evidence
    devices: tuple[DeviceEvidence, ...] = ()

    @property
    def spki_sha256(self) -> bytes:
        return hashlib.sha256(spki_der(self.cert.public_key())).digest()  # type: ignore[arg-type]

    @property
    def cert_sha256(self) -> str:
        return hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    def sans(self) -> list[str]:
        try:
            ext = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return [str(v) for v in ext.get_values_for_type(x509.DNSName)] + \
               [str(v) for v in ext.get_values_for_type(x509.IPAddress)]


class UnreadableCertificate(EvidenceError):
    """Bytes that are not an X.509 certificate at all (truncated, not PEM/DER, a field that does not
    decode). For a file the user gave, that is bad input (the CLI exits 2); for bytes a server
    presented, the pipeline records it as a failed ``certificate.parse`` check (a verdict)."""


# cryptography reports ASN.1 failures as the Rust parser's debug text, e.g.
# 'error parsing asn1 value: ParseError { kind: InvalidLength, location: ["Certificate::tbs_cert"] }'.
_ASN1_KIND = re.compile(r"ParseError \{ kind: ([A-Za-z]+)")
_ASN1_LOCATION = re.compile(r"location: \[([^\]]*)\]")


def _asn1_detail(exc: Exception) -> str | None:
    """A short plain-words reason from cryptography's error ("invalid length in tbs_cert"), or None
    when the text is not one we can translate: the raw debug text is never shown to users."""
    text = str(exc)
    if "MalformedFraming" in text:
        return "the PEM block is cut off or its BEGIN/END lines do not match"
    kind = _ASN1_KIND.search(text)
    if kind is None:
        return None
    words = re.sub(r"(?<!^)(?=[A-Z])", " ", kind.group(1)).lower()
    location = _ASN1_LOCATION.search(text)
    # The location is a path like "Certificate::tbs_cert", ..., 3: name its last named field.
    names = [part.strip().strip('"') for part in (location.group(1).split(",") if location else [])]
    names = [n.split("::")[-1] for n in names if n and not n.isdigit()]
    return f"{words} in {names[-1]}" if names else words


FILE_HINT = "copy or download it again, or name the server as https://HOST:PORT instead of the file"


def _unreadable(source: str, data: bytes, exc: Exception, hint: str | None) -> UnreadableCertificate:
    detail = _asn1_detail(exc)
    if detail and not looks_like_pem(data):
        detail = f"read as DER, {detail}"
    return UnreadableCertificate(f"{source} is not a PEM or DER X.509 certificate (truncated?)"
                                 + (f": {detail}" if detail else ""), hint=hint)


def load_x509(data: bytes, *, source: str = "the certificate", hint: str | None = None) -> x509.Certificate:
    """Parse a PEM or DER certificate. *source* names it in the error ("'cert.pem'"), *hint* says
    what to do about it (FILE_HINT for a file the user gave)."""
    if len(data) > MAX_CERT_BYTES:
        raise UnreadableCertificate(f"{source} is {len(data)} bytes, over the {MAX_CERT_BYTES}-byte limit",
                                    hint="an RA-TLS certificate is a few KiB; is this the right file?")
    if not data.strip():
        raise UnreadableCertificate(f"{source} is empty", hint=hint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if looks_like_pem(data):
                return x509.load_pem_x509_certificate(data)
            return x509.load_der_x509_certificate(data)
        except X509_ERRORS as exc:
            raise _unreadable(source, data, exc, hint) from None


def read_certificate(data: bytes, *, source: str = "the certificate",
                     hint: str | None = None) -> x509.Certificate:
    """load_x509, and decode every field now (cryptography decodes lazily), so that bytes which are
    not a certificate fail here as UnreadableCertificate - never later as a verification result."""
    cert = load_x509(data, source=source, hint=hint)
    try:
        return force_parse(cert, what=source)
    except EvidenceError as exc:
        raise _unreadable(source, data, exc, hint) from None


def parse_ratls(cert: x509.Certificate) -> RatlsCertificate:
    """Extract and decode the CMW collection and claims. Parsing only: nothing is verified."""
    force_parse(cert)
    if not isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
        raise EvidenceError("certificate key is not an EC key; ratls/1 certificates use ECDSA P-256 or P-384")
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(cmw.OID_CMW))
    except x509.ExtensionNotFound:
        raise EvidenceError("certificate has no RA-TLS evidence (extension id-pe-cmw 1.3.6.1.5.5.7.1.35)",
                            hint="this is an ordinary TLS certificate, not one issued by a ratls gateway") from None
    except ValueError as exc:
        raise EvidenceError(f"certificate extensions are malformed: {exc}") from None
    if ext.critical:
        raise EvidenceError("the id-pe-cmw extension is marked critical; ratls/1 requires non-critical")
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise EvidenceError("id-pe-cmw extension could not be read as raw bytes")
    collection = cmw.decode_extension_value(value.value)
    claims_cbor, claims, evidence = evidence_from_collection(collection)
    return RatlsCertificate(cert, collection, claims_cbor, claims, evidence, devices_from_collection(collection))


def evidence_from_collection(collection: cmw.CmwCollection) -> tuple[bytes, Claims, Evidence]:
    """Claims (raw and decoded) and hardware evidence from a ratls/1 CMW collection."""
    if collection.collection_type not in (None, cmw.RATLS_COLLECTION_TYPE):
        raise EvidenceError(f"CMW collection type '{collection.collection_type}' is not ratls/1")
    claims_rec = collection.record("claims")
    if claims_rec.media_type != cmw.MEDIA_CLAIMS:
        raise EvidenceError(f"claims record has media type '{claims_rec.media_type}', expected {cmw.MEDIA_CLAIMS}")
    claims = decode_claims(claims_rec.value)
    cpu = collection.record("cpu")
    endorsements: dict[str, bytes] = {}
    coll = collection.collection("endorsements")
    if coll is not None:
        for label, item in coll.items.items():
            if isinstance(item, cmw.CmwCollection) and label in collection.items:
                continue  # a device's own endorsements (devices_from_collection)
            if not isinstance(item, cmw.CmwRecord):
                raise EvidenceError(f"endorsement '{label}' must be a record")
            endorsements[label] = item.value
    evidence = Evidence(claims.platform, cpu.media_type, cpu.value, endorsements)
    return claims_rec.value, claims, evidence


_COLLECTION_LABELS = {"claims", "cpu", "endorsements"}


def devices_from_collection(collection: cmw.CmwCollection) -> tuple[DeviceEvidence, ...]:
    """Every record beside ``claims`` and ``cpu`` is a device's evidence, with its endorsements
    from the nested collection of the same label. Parsing only: the pipeline checks each one
    against the claims (an unclaimed record is a failed check, never ignored)."""
    coll = collection.collection("endorsements")
    devices: list[DeviceEvidence] = []
    for label, item in collection.items.items():
        if label in _COLLECTION_LABELS:
            continue
        if not isinstance(item, cmw.CmwRecord):
            raise EvidenceError(f"CMW entry '{label}' is a collection where a device record was expected")
        check_label(label)
        own = coll.collection(label) if coll is not None else None
        endorsements: dict[str, bytes] = {}
        for name, value in (own.items.items() if own is not None else ()):
            if not isinstance(value, cmw.CmwRecord):
                raise EvidenceError(f"endorsement '{label}/{name}' must be a record")
            endorsements[name] = value.value
        devices.append(DeviceEvidence(label, item.media_type, item.value, endorsements))
    return tuple(devices)
