"""RIMs for the simulated GPU: a P-384 RIM root, a signer under it, and signed SWID tags in
NVIDIA's exact shape (namespaces, attributes, enveloped ecdsa-sha384 / C14N 1.1 / SHA-384
XML-DSig with the KeyInfo chain), so ``parse_rim`` and ``verify_rim`` read them unchanged with
``roots=[the simulated root]``. Every name says SIMULATED: these never pass for NVIDIA's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from html import escape

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import XMLSigner
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod

from ...errors import UsageError
from .rim import HASH_NS, SWID_NS, read_document
from .types import DIGEST_LEN

ORGANIZATION = "ratls-gateway simulator - NOT NVIDIA"
TCG_RIM_NS = "https://trustedcomputinggroup.org/resource/tcg-reference-integrity-manifest-rim-information-model/"
NUM_INDICES = 64  # NVIDIA's RIMs list every index 0..63, inactive ones with a zero hash

# Golden values: index -> (active, alternatives).
Measurements = Mapping[int, tuple[bool, tuple[bytes, ...]]]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _certificate(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 issuer_key: ec.EllipticCurvePrivateKey, not_before: datetime, days: int,
                 ca: bool, path_length: int | None = None) -> x509.Certificate:
    usage = dict.fromkeys(("content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
                           "encipher_only", "decipher_only"), False)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(not_before)
               .not_valid_after(not_before + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, **usage),
                              critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    return builder.sign(issuer_key, hashes.SHA384())


def generate_rim_root(not_before: datetime | None = None, days: int = 3650) -> tuple[
        ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed P-384 RIM root CA for the simulator (stands in for NVIDIA's CoRIM root)."""
    key = ec.generate_private_key(ec.SECP384R1())
    start = not_before or datetime.now(UTC) - timedelta(days=1)
    name = _name("SIMULATED CoRIM signing Root CA")
    return key, _certificate(name, key, name, key, start, days, ca=True)


def generate_rim_signer(root_key: ec.EllipticCurvePrivateKey, root_cert: x509.Certificate, *,
                        not_before: datetime | None = None, days: int = 730) -> tuple[
        ec.EllipticCurvePrivateKey, tuple[x509.Certificate, ...]]:
    """A signer key and its chain, leaf first, in NVIDIA's shape: signer <- CA <- root (the root
    included, as NVIDIA's RIMs include theirs; verifiers ignore it and use their own)."""
    start = not_before or datetime.now(UTC) - timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = _certificate(_name("SIMULATED Reference Value CA"), ca_key, root_cert.subject, root_key, start,
                      days + 1, ca=True, path_length=0)
    key = ec.generate_private_key(ec.SECP384R1())
    leaf = _certificate(_name("SIMULATED HCC RIM Signer"), key, ca.subject, ca_key, start, days, ca=False)
    return key, (leaf, ca, root_cert)


def sign_rim(version: str, product: str, measurements: Measurements, key: ec.EllipticCurvePrivateKey,
             chain: Sequence[x509.Certificate]) -> bytes:
    """A signed SWID tag listing indices 0..63 (those not in *measurements* inactive, zero hash)."""
    for label, text in (("version", version), ("product", product)):
        if not text or not text.isascii() or not text.isprintable():
            raise UsageError(f"RIM {label} must be printable ASCII, not {text!r}")
    root = read_document(_swid_tag(version, product, measurements), "simulated RIM")
    signer = XMLSigner(signature_algorithm=SignatureMethod.ECDSA_SHA384, digest_algorithm=DigestAlgorithm.SHA384,
                       c14n_algorithm=CanonicalizationMethod.CANONICAL_XML_1_1)
    signed = signer.sign(root, key=key, cert=list(chain))
    return etree.tostring(signed)


def _swid_tag(version: str, product: str, measurements: Measurements) -> bytes:
    if any(not 0 <= i < NUM_INDICES for i in measurements):
        raise UsageError(f"RIM measurement indices are 0..{NUM_INDICES - 1}")
    resources = [_resource(i, *measurements.get(i, (False, (bytes(DIGEST_LEN),)))) for i in range(NUM_INDICES)]
    # The tag ID only has to be unique per RIM: derive it from the content, like a content hash.
    tag_id = hashlib.sha384("\n".join([version, product, *resources]).encode()).hexdigest()
    v, p = escape(version, quote=True), escape(product, quote=True)
    text = (f'<SoftwareIdentity xmlns="{SWID_NS}" xmlns:ns0="{SWID_NS}" xmlns:ns2="{HASH_NS}" corpus="false" '
            f'name="{p}" patch="false" supplemental="false" tagId="{tag_id}" version="1.0" tagVersion="0">\n'
            f'    <ns0:Entity name="{ORGANIZATION}" role="softwareCreator tagCreator"/>\n'
            f'    <ns0:Meta xmlns:ns1="{TCG_RIM_NS}" colloquialVersion="{v}" edition="GPU" product="{p}" '
            f'revision="r1" PayloadType="direct" ns1:BindingSpec="RIMIM" ns1:BindingSpecVersion="1.01" '
            f'ns1:PlatformManufacturerStr="{ORGANIZATION}" ns1:PlatformModel="{p}"/>\n'
            f'    <ns0:Payload xmlns:SHA384="{HASH_NS}">\n'
            + "".join(f"        {r}\n" for r in resources)
            + "    </ns0:Payload>\n</SoftwareIdentity>")
    return text.encode()


def _resource(index: int, active: bool, alternatives: tuple[bytes, ...]) -> str:
    if not alternatives or any(len(a) != DIGEST_LEN for a in alternatives):
        raise UsageError(f"RIM measurement {index} needs one or more {DIGEST_LEN}-byte SHA-384 values")
    hashes_ = " ".join(f'ns2:Hash{i}="{a.hex()}"' for i, a in enumerate(alternatives))
    return (f'<ns0:Resource type="Measurement" index="{index}" active="{active}" alternatives="{len(alternatives)}" '
            f'{hashes_} name="Measurement_{index}" size="{DIGEST_LEN}"/>')
