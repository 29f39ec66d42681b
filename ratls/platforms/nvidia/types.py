"""Typed values passed between the NVIDIA GPU layers (abi -> verify -> appraise).

Parsing (``abi``, ``rim``) never verifies; verifying (``verify``, ``rim_verify``, ``measurements``)
never appraises policy; appraising (``appraise``) reads only these values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from cryptography import x509

from ...appraisal import Check

NONCE_LEN = 32
DIGEST_LEN = 48  # SHA-384 measurement values
SIGNATURE_LEN = 96  # ECDSA P-384 r||s, big-endian


class GpuArch(StrEnum):
    HOPPER = "hopper"
    BLACKWELL = "blackwell"


class OpaqueType(IntEnum):
    """SPDM opaque-data TLV types NVIDIA's GPUs send (the ones we read by name)."""

    CERT_ISSUER_NAME = 1
    CERT_AUTHORITY_KEY_IDENTIFIER = 2
    DRIVER_VERSION = 3
    GPU_INFO = 4
    SKU = 5
    VBIOS_VERSION = 6
    MANUFACTURER_ID = 7
    TAMPER_DETECTION = 8
    SMC = 9
    VPR = 10
    NVDEC0_STATUS = 11
    MSRSCNT = 12
    CPRINFO = 13
    BOARD_ID = 14
    CHIP_SKU = 15
    CHIP_SKU_MOD = 16
    PROJECT = 17
    PROJECT_SKU = 18
    PROJECT_SKU_MOD = 19
    FWID = 20
    PROTECTED_PCIE_STATUS = 21
    SWITCH_PDI = 22
    FLOORSWEPT_PORTS = 23
    POSITION_ID = 24
    LOCK_SWITCH_STATUS = 25
    GPU_LINK_CONN = 32
    SYS_ENABLE_STATUS = 33
    OPAQUE_DATA_VERSION = 34
    CHIP_INFO = 35
    FEATURE_FLAG = 36
    INVALID = 255


class Nvdec0Status(IntEnum):
    ENABLED = 0xAA
    DISABLED = 0x55


class RimKind(StrEnum):
    DRIVER = "driver"
    VBIOS = "vbios"


@dataclass(frozen=True)
class MeasurementBlock:
    """One DMTF measurement block. ``index`` is the SPDM index (1..64); RIM index = index - 1."""

    index: int
    value_type: int
    value: bytes


@dataclass(frozen=True)
class OpaqueData:
    """The decoded opaque-data TLVs (raw values by type) with typed views of the ones we use."""

    fields: Mapping[int, bytes]
    driver_version: str | None = None  # "550.90.07"
    vbios_version: str | None = None  # "96.00.9f.00.01" (lower case; compare case-insensitively)
    project: str | None = None  # "1010", NUL-stripped, upper case
    project_sku: str | None = None  # "0200"
    chip_sku: str | None = None  # "882"
    chip_info: str | None = None  # "GB202" (Blackwell only)
    fwid: bytes | None = None  # 48 bytes when present (absent on 535/545 drivers)
    nvdec0_status: int | None = None
    feature_flag: int | None = None  # 0 SPT, 1 MPT, 2 PPCIE
    opaque_data_version: int | None = None


@dataclass(frozen=True)
class GpuReport:
    """An SPDM 1.1 GET_MEASUREMENTS request || MEASUREMENTS response, strictly parsed."""

    raw: bytes
    request_nonce: bytes  # the verifier's challenge (32 B): the only nonce that binds anything
    response_nonce: bytes  # chosen by the GPU, never compared
    spdm_version: int
    blocks: Mapping[int, MeasurementBlock]  # by SPDM index
    opaque: OpaqueData
    signature: bytes  # 96 B r||s

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:-SIGNATURE_LEN]


@dataclass(frozen=True)
class RimMeasurement:
    """A RIM ``Resource type="Measurement"``: ``index`` is 0-based (SPDM index - 1)."""

    index: int
    active: bool
    size: int
    alternatives: tuple[bytes, ...]


@dataclass(frozen=True)
class Rim:
    """A parsed RIM (SWID tag). Values only from a document whose signature verified."""

    version: str  # Meta@colloquialVersion
    product: str  # Meta@product (chip, e.g. GH100)
    tag_id: str
    measurements: Mapping[int, RimMeasurement]
    signer_chain: tuple[x509.Certificate, ...] = ()  # KeyInfo certificates, leaf first


@dataclass(frozen=True)
class VerifiedRim:
    kind: RimKind
    rim: Rim | None  # None when the document could not be read or its signature failed
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return self.rim is not None and bool(self.checks) and all(c.ok for c in self.checks)


class OcspStatus(StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"
    NOT_CHECKED = "not-checked"


@dataclass(frozen=True)
class MeasurementResult:
    compared: int  # golden (active) indices compared
    mismatched: tuple[tuple[int, RimKind], ...]  # (RIM index, source)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.compared > 0 and not self.mismatched and all(c.ok for c in self.checks)


@dataclass
class VerifiedGpu:
    """What verifying one GPU's evidence established; ``checks`` names every step."""

    label: str  # "gpu0"
    checks: list[Check]
    report: GpuReport | None = None
    arch: GpuArch | None = None
    chip: str | None = None  # "GH100", from the chain
    ueid: str | None = None  # leaf serial number (decimal)
    simulated: bool = False
    driver_rim: VerifiedRim | None = None
    vbios_rim: VerifiedRim | None = None
    measurements: MeasurementResult | None = None  # None: no RIMs given, nothing compared
    ocsp: dict[str, OcspStatus] = field(default_factory=dict)  # certificate subject -> status
    state: Mapping[str, object] = field(default_factory=dict)  # attested NVML state (claims): cc, devtools, ...
    root_sha256: str | None = None  # simulated GPUs: the pinned simulated device root
    rim_root_sha256: str | None = None  # simulated GPUs: the pinned simulated RIM root

    @property
    def authentic(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def driver_version(self) -> str | None:
        return self.report.opaque.driver_version if self.report else None

    @property
    def vbios_version(self) -> str | None:
        return self.report.opaque.vbios_version if self.report else None
