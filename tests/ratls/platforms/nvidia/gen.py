"""Generated GPU-style keys, certificates and reports for the NVIDIA tests (nothing here is
NVIDIA's: every key is made on the spot)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from ratls import der
from ratls.platforms.nvidia.abi import encode_report
from ratls.platforms.nvidia.certs import OID_DICE_TCB_INFO, OID_HOPPER_FWID, SHA384_OID_DER
from ratls.platforms.nvidia.types import MeasurementBlock, OpaqueType

NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
FOREVER = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
FWID = hashlib.sha384(b"generated firmware").digest()
REQUEST_NONCE = bytes(range(32))
RESPONSE_NONCE = bytes(range(100, 132))


def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ratls tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def fwid_der(digest: bytes) -> bytes:
    return der.encode(0x30, der.encode(0x06, SHA384_OID_DER) + der.encode_octet_string(digest))


def hopper_fwid_ext(public_key: ec.EllipticCurvePublicKey, digest: bytes) -> bytes:
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der.encode(0x30, der.encode(0x02, b"\x01") + spki + fwid_der(digest))


def dice_tcb_ext(digest: bytes) -> bytes:
    fields = der.encode(0x80, b"ratls") + der.encode(0x81, b"GB100 A01 GSP") + der.encode(0xA6, fwid_der(digest))
    return der.encode(0x30, fields)


def cert(subject: str, issuer: str, public_key: ec.EllipticCurvePublicKey, signer: ec.EllipticCurvePrivateKey, *,
         ca: bool, ext: tuple[str, bytes] | None = None, not_before: datetime = NOT_BEFORE,
         not_after: datetime = FOREVER, serial: int = 1234567) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
               .public_key(public_key).serial_number(serial)
               .not_valid_before(not_before).not_valid_after(not_after))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if ext is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(ext[0]), ext[1]),
                                        critical=False)
    return builder.sign(signer, hashes.SHA384())


@dataclass
class GenChain:
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey

    @property
    def chain(self) -> list[x509.Certificate]:
        return [self.leaf, self.root]

    def pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def sign(self, data: bytes) -> bytes:
        return raw_signature(self.leaf_key, data)


def make_chain(*, blackwell: bool = False, fwid: bytes = FWID, not_before: datetime = NOT_BEFORE,
               not_after: datetime = FOREVER, chip: str | None = None) -> GenChain:
    """Root + leaf, the leaf certifying *fwid* the way Hopper or Blackwell GPUs do."""
    root_key, leaf_key = key(), key()
    chip = chip or ("GB100" if blackwell else "GH100")
    root = cert("Generated Device Identity CA", "Generated Device Identity CA", root_key.public_key(), root_key,
                ca=True, not_before=not_before, not_after=not_after)
    ext = (OID_DICE_TCB_INFO, dice_tcb_ext(fwid)) if blackwell else (OID_HOPPER_FWID,
                                                                     hopper_fwid_ext(leaf_key.public_key(), fwid))
    leaf = cert(f"{chip} A01 GSP FMC LF", "Generated Device Identity CA", leaf_key.public_key(), root_key, ca=False,
                ext=ext, not_before=not_before, not_after=not_after)
    return GenChain(root, root_key, leaf, leaf_key)


def raw_signature(private_key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hashes.SHA384())))
    return r.to_bytes(48, "big") + s.to_bytes(48, "big")


def blocks(count: int = 64) -> list[MeasurementBlock]:
    return [MeasurementBlock(i, 1, hashlib.sha384(b"block %d" % i).digest()) for i in range(1, count + 1)]


def opaque_fields(*, fwid: bytes | None = FWID, chip_info: bytes | None = None) -> dict[int, bytes]:
    fields = {
        OpaqueType.VBIOS_VERSION: bytes.fromhex("0074009620000000"),
        OpaqueType.CHIP_SKU: b"862\0\0\0\0\0\0",
        OpaqueType.PROJECT: b"1010\0",
        OpaqueType.PROJECT_SKU: b"0205\0",
        OpaqueType.DRIVER_VERSION: b"580.159.03\0",
        OpaqueType.MSRSCNT: bytes(4 * 64),
        OpaqueType.NVDEC0_STATUS: b"\x55",
    }
    if fwid is not None:
        fields[OpaqueType.FWID] = fwid
    if chip_info is not None:
        fields[OpaqueType.CHIP_INFO] = chip_info
    return {int(k): v for k, v in fields.items()}


def make_report(chain: GenChain, *, nonce: bytes = REQUEST_NONCE, fwid: bytes | None = FWID,
                chip_info: bytes | None = None) -> bytes:
    return encode_report(nonce, blocks(), opaque_fields(fwid=fwid, chip_info=chip_info), RESPONSE_NONCE, chain.sign)


def days(n: float) -> timedelta:
    return timedelta(days=n)
