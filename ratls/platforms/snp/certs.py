"""AMD certificates: loading (PEM or DER), the VCEK/VLEK extensions, and the shipped roots."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cache
from importlib import resources

from cryptography import x509

from ... import der
from ...errors import ConfigError, EvidenceError
from ...x509util import X509_ERRORS, fingerprint, force_parse, looks_like_pem
from .abi import Product, product_from_name

OID_STRUCT_VERSION = "1.3.6.1.4.1.3704.1.1"
OID_PRODUCT_NAME = "1.3.6.1.4.1.3704.1.2"
OID_BL_SPL = "1.3.6.1.4.1.3704.1.3.1"
OID_TEE_SPL = "1.3.6.1.4.1.3704.1.3.2"
OID_SNP_SPL = "1.3.6.1.4.1.3704.1.3.3"
OID_UCODE_SPL = "1.3.6.1.4.1.3704.1.3.8"
OID_FMC_SPL = "1.3.6.1.4.1.3704.1.3.9"
OID_HWID = "1.3.6.1.4.1.3704.1.4"
OID_CSP_ID = "1.3.6.1.4.1.3704.1.5"

# SHA-256 of the DER of AMD's public root and intermediate certificates, as published by
# AMD KDS (/vcek/v1/<Product>/cert_chain and /vlek/v1/<Product>/cert_chain). A shipped
# file that does not match is refused, so a tampered install cannot widen trust.
PINNED_FINGERPRINTS: dict[tuple[Product, str], str] = {
    (Product.MILAN, "ark"): "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    (Product.MILAN, "ask"): "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
    (Product.MILAN, "asvk"): "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
    (Product.GENOA, "ark"): "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    (Product.GENOA, "ask"): "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
    (Product.GENOA, "asvk"): "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
    (Product.TURIN, "ark"): "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
    (Product.TURIN, "ask"): "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
    (Product.TURIN, "asvk"): "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
}


def load_certificate(data: bytes, what: str) -> x509.Certificate:
    """Load one certificate from PEM or DER. AMD VCEKs have serial 0, which `cryptography`
    warns about; the warning is expected for these certificates and silenced here."""
    certs = load_certificates(data, what)
    if len(certs) != 1:
        raise EvidenceError(f"{what}: expected one certificate, found {len(certs)}")
    return certs[0]


def load_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if looks_like_pem(data):
                certs = x509.load_pem_x509_certificates(data)
            else:
                certs = [x509.load_der_x509_certificate(data)]
        except X509_ERRORS as exc:
            raise EvidenceError(f"{what}: not a readable X.509 certificate ({exc})",
                                hint="give a PEM or DER certificate file") from None
    if not certs:
        raise EvidenceError(f"{what}: no certificate found")
    return [force_parse(c, what) for c in certs]


@dataclass(frozen=True)
class ProductRoots:
    product: Product
    ark: x509.Certificate
    ask: x509.Certificate
    asvk: x509.Certificate | None


@cache
def shipped_roots() -> dict[Product, ProductRoots]:
    """AMD's ARK/ASK/ASVK for every product, from the package, fingerprint-checked."""
    out: dict[Product, ProductRoots] = {}
    base = resources.files("ratls.platforms.snp") / "roots"
    for product in Product:
        loaded: dict[str, x509.Certificate] = {}
        for role in ("ark", "ask", "asvk"):
            data = (base / product.value / f"{role}.pem").read_bytes()
            cert = load_certificate(data, f"shipped {product.value} {role}")
            expected = PINNED_FINGERPRINTS[(product, role)]
            if fingerprint(cert) != expected:
                raise ConfigError(
                    f"shipped AMD {role.upper()} for {product.title} does not match its pinned fingerprint",
                    hint="the installation is damaged or was tampered with; reinstall ratls-gateway",
                )
            loaded[role] = cert
        out[product] = ProductRoots(product, loaded["ark"], loaded["ask"], loaded["asvk"])
    return out


@dataclass(frozen=True)
class EndorsementKeyInfo:
    """What AMD wrote into a VCEK or VLEK certificate about the chip and its TCB."""

    kind: str  # "vcek" or "vlek"
    product_name: str | None
    struct_version: int | None
    bl: int | None
    tee: int | None
    snp: int | None
    ucode: int | None
    fmc: int | None
    hwid: bytes | None
    csp_id: str | None

    def tcb(self) -> dict[str, int]:
        out = {}
        for name in ("bl", "tee", "snp", "ucode", "fmc"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def _ext_map(cert: x509.Certificate) -> dict[str, bytes]:
    out = {}
    for ext in cert.extensions:
        value = ext.value
        if isinstance(value, x509.UnrecognizedExtension):
            out[ext.oid.dotted_string] = value.value
    return out


def decode_hwid(raw: bytes) -> bytes:
    """hwID is raw bytes in AMD's certificates (64 bytes, 8 on Turin); some tools wrote it
    as a DER OCTET STRING. Accept both encodings."""
    if len(raw) in (66, 10) and raw[0] == der.TAG_OCTET_STRING and raw[1] == len(raw) - 2:
        return raw[2:]
    return raw


def endorsement_key_info(cert: x509.Certificate) -> EndorsementKeyInfo:
    exts = _ext_map(cert)
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    name = str(cn[0].value) if cn else ""
    kind = "vlek" if "VLEK" in name.upper() else "vcek"

    def integer(oid: str, what: str) -> int | None:
        return der.read_integer(exts[oid], what) if oid in exts else None

    product = der.read_ia5(exts[OID_PRODUCT_NAME], "productName") if OID_PRODUCT_NAME in exts else None
    csp = der.read_ia5(exts[OID_CSP_ID], "cspID") if OID_CSP_ID in exts else None
    return EndorsementKeyInfo(
        kind=kind,
        product_name=product,
        struct_version=integer(OID_STRUCT_VERSION, "structVersion"),
        bl=integer(OID_BL_SPL, "blSPL"),
        tee=integer(OID_TEE_SPL, "teeSPL"),
        snp=integer(OID_SNP_SPL, "snpSPL"),
        ucode=integer(OID_UCODE_SPL, "ucodeSPL"),
        fmc=integer(OID_FMC_SPL, "fmcSPL"),
        hwid=decode_hwid(exts[OID_HWID]) if OID_HWID in exts else None,
        csp_id=csp,
    )


def product_of_key(cert: x509.Certificate, info: EndorsementKeyInfo) -> Product | None:
    """The product line a VCEK/VLEK belongs to, from productName or else the issuer CN."""
    if info.product_name:
        found = product_from_name(info.product_name)
        if found:
            return found
    issuer = cert.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if issuer:
        return product_from_name(str(issuer[0].value).rsplit("-", 1)[-1])
    return None
