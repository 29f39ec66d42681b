"""SEV-SNP ATTESTATION_REPORT (ABI spec rev 1.58, table 23) and the extended-report
certificate table (GHCB spec). Parsing only: nothing here verifies anything.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from enum import StrEnum

from ...errors import EvidenceError

REPORT_SIZE = 0x4A0
SIGNED_LENGTH = 0x2A0
SIGNATURE_OFFSET = 0x2A0
ECDSA_COMPONENT_SIZE = 72  # r and s are 72-byte little-endian integers
SIG_ALGO_ECDSA_P384_SHA384 = 1
SUPPORTED_VERSIONS = (2, 3, 4, 5)


class Product(StrEnum):
    MILAN = "milan"
    GENOA = "genoa"
    TURIN = "turin"

    @property
    def title(self) -> str:
        return self.value.capitalize()


def product_from_cpuid(family: int, model: int) -> Product | None:
    """Map CPUID family/model (report v3+) to the product line that signs it."""
    if family == 0x19:
        if model <= 0x0F:
            return Product.MILAN
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
            return Product.GENOA
        return None
    if family == 0x1A:
        return Product.TURIN if model <= 0x1F else None
    return None


def product_from_name(name: str) -> Product | None:
    """VCEK productName extension: 'Milan-B0', 'Genoa', 'Turin', ..."""
    head = name.split("-", 1)[0].strip().lower()
    for product in Product:
        if head == product.value:
            return product
    return None


@dataclass(frozen=True)
class TcbVersion:
    """TCB_VERSION. Milan/Genoa: bl, tee, -, -, -, -, snp, ucode. Turin: fmc, bl, tee, snp, -, -, -, ucode."""

    raw: int
    turin_layout: bool
    bl: int
    tee: int
    snp: int
    ucode: int
    fmc: int | None

    @classmethod
    def decode(cls, raw: int, *, turin_layout: bool) -> TcbVersion:
        b = raw.to_bytes(8, "little")
        if turin_layout:
            return cls(raw, True, bl=b[1], tee=b[2], snp=b[3], ucode=b[7], fmc=b[0])
        return cls(raw, False, bl=b[0], tee=b[1], snp=b[6], ucode=b[7], fmc=None)

    @classmethod
    def encode(cls, *, bl: int, tee: int, snp: int, ucode: int, fmc: int | None = None) -> int:
        if fmc is not None:
            return int.from_bytes(bytes([fmc, bl, tee, snp, 0, 0, 0, ucode]), "little")
        return int.from_bytes(bytes([bl, tee, 0, 0, 0, 0, snp, ucode]), "little")

    def components(self) -> dict[str, int]:
        out = {"bl": self.bl, "tee": self.tee, "snp": self.snp, "ucode": self.ucode}
        if self.fmc is not None:
            out["fmc"] = self.fmc
        return out

    def __str__(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.components().items())


@dataclass(frozen=True)
class GuestPolicy:
    raw: int

    @property
    def abi_minor(self) -> int:
        return self.raw & 0xFF

    @property
    def abi_major(self) -> int:
        return (self.raw >> 8) & 0xFF

    def _bit(self, n: int) -> bool:
        return bool(self.raw >> n & 1)

    @property
    def smt(self) -> bool:
        return self._bit(16)

    @property
    def reserved_one(self) -> bool:
        return self._bit(17)

    @property
    def migrate_ma(self) -> bool:
        return self._bit(18)

    @property
    def debug(self) -> bool:
        return self._bit(19)

    @property
    def single_socket(self) -> bool:
        return self._bit(20)

    @property
    def cxl_allow(self) -> bool:
        return self._bit(21)

    @property
    def mem_aes_256_xts(self) -> bool:
        return self._bit(22)

    @property
    def rapl_dis(self) -> bool:
        return self._bit(23)

    @property
    def ciphertext_hiding(self) -> bool:
        return self._bit(24)

    @property
    def page_swap_disable(self) -> bool:
        return self._bit(25)

    def to_json(self) -> dict[str, object]:
        return {
            "raw": f"0x{self.raw:x}",
            "abi": f"{self.abi_major}.{self.abi_minor}",
            "smt": self.smt,
            "migrate_ma": self.migrate_ma,
            "debug": self.debug,
            "single_socket": self.single_socket,
            "cxl_allow": self.cxl_allow,
            "mem_aes_256_xts": self.mem_aes_256_xts,
            "rapl_dis": self.rapl_dis,
            "ciphertext_hiding": self.ciphertext_hiding,
            "page_swap_disable": self.page_swap_disable,
        }


@dataclass(frozen=True)
class PlatformInfo:
    raw: int

    def to_json(self) -> dict[str, object]:
        names = ["smt_en", "tsme_en", "ecc_en", "rapl_dis", "ciphertext_hiding_en", "alias_check_complete"]
        out: dict[str, object] = {"raw": f"0x{self.raw:x}"}
        out.update({name: bool(self.raw >> i & 1) for i, name in enumerate(names)})
        out["tio_en"] = bool(self.raw >> 7 & 1)
        return out

    @property
    def smt_enabled(self) -> bool:
        return bool(self.raw & 1)

    @property
    def tsme_enabled(self) -> bool:
        return bool(self.raw >> 1 & 1)


class SigningKey(StrEnum):
    VCEK = "vcek"
    VLEK = "vlek"
    NONE = "none"


@dataclass(frozen=True)
class SignerInfo:
    raw: int

    @property
    def author_key_en(self) -> bool:
        return bool(self.raw & 1)

    @property
    def mask_chip_key(self) -> bool:
        return bool(self.raw >> 1 & 1)

    @property
    def signing_key(self) -> SigningKey:
        value = (self.raw >> 2) & 0x7
        if value == 0:
            return SigningKey.VCEK
        if value == 1:
            return SigningKey.VLEK
        if value == 7:
            return SigningKey.NONE
        raise EvidenceError(f"report SIGNING_KEY field has reserved value {value}")


@dataclass(frozen=True)
class SnpReport:
    raw: bytes
    version: int
    guest_svn: int
    policy: GuestPolicy
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: TcbVersion
    platform_info: PlatformInfo
    signer_info: SignerInfo
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: TcbVersion
    cpuid_family: int | None
    cpuid_model: int | None
    cpuid_stepping: int | None
    chip_id: bytes
    committed_tcb: TcbVersion
    current_version: tuple[int, int, int]
    committed_version: tuple[int, int, int]
    launch_tcb: TcbVersion
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: int
    signature_s: int

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_LENGTH]

    @property
    def product(self) -> Product | None:
        if self.cpuid_family is None or self.cpuid_model is None:
            return None
        return product_from_cpuid(self.cpuid_family, self.cpuid_model)

    def summary(self) -> dict[str, object]:
        return {
            "version": self.version,
            "product": self.product.value if self.product else None,
            "guest_svn": self.guest_svn,
            "vmpl": self.vmpl,
            "policy": self.policy.to_json(),
            "platform_info": self.platform_info.to_json(),
            "signing_key": self.signer_info.signing_key.value,
            "mask_chip_key": self.signer_info.mask_chip_key,
            "author_key_en": self.signer_info.author_key_en,
            "firmware": "{}.{}.{}".format(*self.current_version),
            "report_data": self.report_data.hex(),
            "host_data": self.host_data.hex(),
            "id_key_digest": self.id_key_digest.hex(),
            "author_key_digest": self.author_key_digest.hex(),
            "family_id": self.family_id.hex(),
            "image_id": self.image_id.hex(),
            "chip_id": self.chip_id.hex(),
            "reported_tcb": self.reported_tcb.components(),
            "current_tcb": self.current_tcb.components(),
            "committed_tcb": self.committed_tcb.components(),
            "launch_tcb": self.launch_tcb.components(),
        }


def _checked_header(data: bytes) -> tuple[int, int, int, int, int, int, int, int]:
    """version, guest_svn, policy, vmpl, sig_algo, current_tcb, platform_info, signer_info -
    refusing what this parser cannot read."""
    if len(data) != REPORT_SIZE:
        raise EvidenceError(
            f"SEV-SNP report is {len(data)} bytes, expected exactly {REPORT_SIZE} (0x4A0)",
            hint="pass the raw ATTESTATION_REPORT, not an extended report or a hex/base64 dump",
        )
    version, guest_svn, policy = struct.unpack_from("<IIQ", data, 0x00)
    if version not in SUPPORTED_VERSIONS:
        raise EvidenceError(f"SEV-SNP report version {version} is not supported (2, 3, 4 and 5 are)")
    vmpl, sig_algo, current_tcb_raw, platform_info, signer_info = struct.unpack_from("<IIQQI", data, 0x30)
    if sig_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise EvidenceError(f"SEV-SNP report signature algorithm {sig_algo} is not ECDSA P-384/SHA-384 (1)")
    if vmpl > 3:
        raise EvidenceError(f"SEV-SNP report VMPL {vmpl} is out of range 0-3")
    return version, guest_svn, policy, vmpl, sig_algo, current_tcb_raw, platform_info, signer_info


def parse_report(data: bytes) -> SnpReport:
    """Parse an ATTESTATION_REPORT. Refuses truncated, oversized or unknown-version reports."""
    version, guest_svn, policy, vmpl, sig_algo, current_tcb_raw, platform_info, signer_info = _checked_header(data)
    if version >= 3:
        fam, model, step = data[0x188], data[0x189], data[0x18A]
    else:
        fam = model = step = None
    turin = fam == 0x1A
    reported_tcb_raw, = struct.unpack_from("<Q", data, 0x180)
    committed_tcb_raw, = struct.unpack_from("<Q", data, 0x1E0)
    launch_tcb_raw, = struct.unpack_from("<Q", data, 0x1F0)
    if version >= 5:
        launch_mit, current_mit = struct.unpack_from("<QQ", data, 0x1F8)
    else:
        launch_mit = current_mit = None
    sig = data[SIGNATURE_OFFSET : SIGNATURE_OFFSET + 2 * ECDSA_COMPONENT_SIZE]
    r = int.from_bytes(sig[:ECDSA_COMPONENT_SIZE], "little")
    s = int.from_bytes(sig[ECDSA_COMPONENT_SIZE:], "little")

    def tcb(raw: int) -> TcbVersion:
        return TcbVersion.decode(raw, turin_layout=turin)

    return SnpReport(
        raw=bytes(data),
        version=version,
        guest_svn=guest_svn,
        policy=GuestPolicy(policy),
        family_id=data[0x10:0x20],
        image_id=data[0x20:0x30],
        vmpl=vmpl,
        signature_algo=sig_algo,
        current_tcb=tcb(current_tcb_raw),
        platform_info=PlatformInfo(platform_info),
        signer_info=SignerInfo(signer_info),
        report_data=data[0x50:0x90],
        measurement=data[0x90:0xC0],
        host_data=data[0xC0:0xE0],
        id_key_digest=data[0xE0:0x110],
        author_key_digest=data[0x110:0x140],
        report_id=data[0x140:0x160],
        report_id_ma=data[0x160:0x180],
        reported_tcb=tcb(reported_tcb_raw),
        cpuid_family=fam,
        cpuid_model=model,
        cpuid_stepping=step,
        chip_id=data[0x1A0:0x1E0],
        committed_tcb=tcb(committed_tcb_raw),
        current_version=(data[0x1EA], data[0x1E9], data[0x1E8]),
        committed_version=(data[0x1EE], data[0x1ED], data[0x1EC]),
        launch_tcb=tcb(launch_tcb_raw),
        launch_mit_vector=launch_mit,
        current_mit_vector=current_mit,
        signature_r=r,
        signature_s=s,
    )


@dataclass
class ReportFields:
    """Writable fields for building a report (the simulator and tests use this)."""

    report_data: bytes
    measurement: bytes
    version: int = 5
    guest_svn: int = 0
    policy: int = 0x30000  # SMT allowed, reserved bit 17 set, debug off
    vmpl: int = 0
    reported_tcb: int = 0
    platform_info: int = 0
    signer_info: int = 0
    host_data: bytes = bytes(32)
    id_key_digest: bytes = bytes(48)
    author_key_digest: bytes = bytes(48)
    chip_id: bytes = bytes(64)
    family_id: bytes = bytes(16)
    image_id: bytes = bytes(16)
    report_id: bytes = bytes(32)
    cpuid: tuple[int, int, int] = (0x19, 0x01, 0x01)
    firmware: tuple[int, int, int] = (1, 55, 0)


def build_unsigned_report(f: ReportFields) -> bytearray:
    """Lay out a report body (signature left zero) exactly as the firmware would."""
    if len(f.report_data) != 64 or len(f.measurement) != 48:
        raise ValueError("report_data must be 64 bytes and measurement 48 bytes")
    buf = bytearray(REPORT_SIZE)
    struct.pack_into("<IIQ", buf, 0, f.version, f.guest_svn, f.policy)
    buf[0x10:0x20] = f.family_id
    buf[0x20:0x30] = f.image_id
    struct.pack_into("<IIQQI", buf, 0x30, f.vmpl, SIG_ALGO_ECDSA_P384_SHA384, f.reported_tcb, f.platform_info,
                     f.signer_info)
    buf[0x50:0x90] = f.report_data
    buf[0x90:0xC0] = f.measurement
    buf[0xC0:0xE0] = f.host_data
    buf[0xE0:0x110] = f.id_key_digest
    buf[0x110:0x140] = f.author_key_digest
    buf[0x140:0x160] = f.report_id
    struct.pack_into("<Q", buf, 0x180, f.reported_tcb)
    if f.version >= 3:
        buf[0x188:0x18B] = bytes(f.cpuid)
    buf[0x1A0:0x1E0] = f.chip_id
    struct.pack_into("<Q", buf, 0x1E0, f.reported_tcb)
    major, minor, build = f.firmware
    buf[0x1E8:0x1EB] = bytes([build, minor, major])
    buf[0x1EC:0x1EF] = bytes([build, minor, major])
    struct.pack_into("<Q", buf, 0x1F0, f.reported_tcb)
    struct.pack_into("<Q", buf, 0x38, f.reported_tcb)
    return buf


def encode_signature(r: int, s: int) -> bytes:
    return r.to_bytes(ECDSA_COMPONENT_SIZE, "little") + s.to_bytes(ECDSA_COMPONENT_SIZE, "little")


# ---- extended-report certificate table (GHCB spec, "SNP Extended Guest Request") ----

GUID_VCEK = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
GUID_VLEK = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
GUID_ASK = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
GUID_ARK = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")


class Endorsement(StrEnum):
    """The labels SEV-SNP evidence carries its certificates under (cert table, CMW, CLI): one
    spelling, so a typo is a NameError, not an endorsement silently not found."""

    VCEK = "vcek"
    VLEK = "vlek"
    ASK = "ask"
    ASVK = "asvk"
    ARK = "ark"
    CHAIN = "chain"  # ASK/ASVK (+ARK) as one PEM bundle


GUID_NAMES = {GUID_VCEK: Endorsement.VCEK, GUID_VLEK: Endorsement.VLEK, GUID_ASK: Endorsement.ASK,
              GUID_ARK: Endorsement.ARK}
NAME_GUIDS = {v: k for k, v in GUID_NAMES.items()}
_ENTRY = struct.Struct("<16sII")
MAX_CERT_TABLE = 64 * 1024


def parse_cert_table(data: bytes) -> dict[str, bytes]:
    """Parse the GUID table; returns {name or GUID string: DER}. GUIDs are RFC 4122 byte order."""
    if len(data) > MAX_CERT_TABLE:
        raise EvidenceError(f"certificate table is {len(data)} bytes, over the {MAX_CERT_TABLE}-byte limit")
    out: dict[str, bytes] = {}
    pos = 0
    while True:
        if pos + _ENTRY.size > len(data):
            raise EvidenceError("certificate table is not terminated by an all-zero entry")
        guid_bytes, offset, length = _ENTRY.unpack_from(data, pos)
        pos += _ENTRY.size
        if guid_bytes == bytes(16) and offset == 0 and length == 0:
            break
        guid = uuid.UUID(bytes=guid_bytes)
        if offset < pos or offset + length > len(data):
            raise EvidenceError(f"certificate table entry {guid} points outside the table ({offset}+{length})")
        name = GUID_NAMES.get(guid, str(guid))
        if name in out:
            raise EvidenceError(f"certificate table lists {name} twice")
        out[name] = data[offset : offset + length]
    return out


def encode_cert_table(certs: dict[str, bytes]) -> bytes:
    names = list(certs)
    header_len = _ENTRY.size * (len(names) + 1)
    header = bytearray()
    body = bytearray()
    for name in names:
        guid = NAME_GUIDS.get(name) or uuid.UUID(name)
        header += _ENTRY.pack(guid.bytes, header_len + len(body), len(certs[name]))
        body += certs[name]
    header += bytes(_ENTRY.size)
    return bytes(header + body)
