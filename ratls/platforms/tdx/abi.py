"""Intel TDX quote v4/v5 bytes <-> typed structures. Parsing only: nothing here verifies.

Layout (Intel TDX DCAP Quote Generation Library and Quote Verification spec, "Quote Format"):

    v4: header(48) | TD report body 1.0 (584) | sig_data_len u32 | signature data
    v5: header(48) | body_type u16 | body_size u32 | body (584 TDX 1.0, 648 TDX 1.5) | sig_data_len u32 | sig data

Signature data for attestation key type 2 (ECDSA-256-with-P-256):
    quote signature (64, r||s big-endian) | attestation public key (64, x||y) |
    certification data: type u16 (6 = QE report certification data) | size u32 | data
QE report certification data:
    QE report (384, an SGX enclave report) | QE report signature (64) |
    QE auth data: size u16 | data | certification data: type u16 (5 = PCK chain PEM) | size u32 | data

Real quotes may carry padding after the signature data: everything is sized by the length
fields, never by the buffer's end.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from ...errors import EvidenceError

HEADER_SIZE = 48
BODY_10_SIZE = 584
BODY_15_SIZE = 648
ENCLAVE_REPORT_SIZE = 384
SIGNATURE_SIZE = 64
ATTEST_KEY_SIZE = 64
TEE_TYPE_TDX = 0x81
ATT_KEY_ECDSA_P256 = 2
CERT_TYPE_QE_REPORT = 6
CERT_TYPE_PCK_CHAIN = 5
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
BODY_TYPES = {2: ("TDX 1.0", BODY_10_SIZE), 3: ("TDX 1.5", BODY_15_SIZE)}
MAX_QUOTE_SIZE = 1 << 20
TD_ATTR_DEBUG = 1 << 0
TD_ATTR_SEPT_VE_DISABLE = 1 << 28
TD_ATTR_PKS = 1 << 30
TD_ATTR_KL = 1 << 31
TD_ATTR_PERFMON = 1 << 63


class _Reader:
    """Bounds-checked little-endian reader that names the field it failed on."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise EvidenceError(f"{self.what} is truncated: {field} needs {n} bytes at offset {self.pos}, "
                                f"only {max(0, len(self.data) - self.pos)} left",
                                hint="give the complete quote as produced by the TDX quoting enclave")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self, field: str) -> int:
        return int(struct.unpack("<H", self.take(2, field))[0])

    def u32(self, field: str) -> int:
        return int(struct.unpack("<I", self.take(4, field))[0])


@dataclass(frozen=True)
class QuoteHeader:
    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True)
class TdReportBody:
    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None = None  # TDX 1.5 only
    mr_service_td: bytes | None = None  # TDX 1.5 only

    @property
    def attributes(self) -> int:
        return int.from_bytes(self.td_attributes, "little")

    @property
    def debug(self) -> bool:
        return bool(self.attributes & TD_ATTR_DEBUG)

    @property
    def sept_ve_disable(self) -> bool:
        return bool(self.attributes & TD_ATTR_SEPT_VE_DISABLE)


@dataclass(frozen=True)
class EnclaveReport:
    """An SGX enclave report (here: the quoting enclave's)."""

    raw: bytes
    cpu_svn: bytes
    misc_select: int
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes


@dataclass(frozen=True)
class TdxQuote:
    raw: bytes
    header: QuoteHeader
    body_type: int  # 2 = TDX 1.0, 3 = TDX 1.5 (v4 quotes are always 2)
    body: TdReportBody
    signed: bytes  # the bytes the attestation key signed: header (+ v5 body descriptor) + body
    signature: bytes
    attest_key: bytes
    qe_report: EnclaveReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes
    trailing: int  # bytes after the signature data (padding tolerated, reported)

    @property
    def body_name(self) -> str:
        return BODY_TYPES.get(self.body_type, ("unknown", 0))[0]

    def measurements(self) -> dict[str, str]:
        b = self.body
        out = {"mrtd": b.mr_td.hex(), "mrconfigid": b.mr_config_id.hex(), "mrowner": b.mr_owner.hex(),
               "mrownerconfig": b.mr_owner_config.hex(), "mrseam": b.mr_seam.hex()}
        for i, value in enumerate(b.rtmr):
            out[f"rtmr{i}"] = value.hex()
        return out

    def summary(self) -> dict[str, Any]:
        b = self.body
        return {"quote_version": self.header.version, "body": self.body_name, "tee_type": self.header.tee_type,
                "qe_svn": self.header.qe_svn, "pce_svn": self.header.pce_svn,
                "td_attributes": b.td_attributes.hex(), "debug": b.debug, "sept_ve_disable": b.sept_ve_disable,
                "xfam": b.xfam.hex(),
                "tee_tcb_svn": b.tee_tcb_svn.hex(), "report_data": b.report_data.hex(),
                "trailing_bytes": self.trailing}


def _parse_body(r: _Reader, size: int) -> TdReportBody:
    fields = [r.take(n, name) for name, n in (
        ("TEE_TCB_SVN", 16), ("MRSEAM", 48), ("MRSIGNERSEAM", 48), ("SEAMATTRIBUTES", 8),
        ("TDATTRIBUTES", 8), ("XFAM", 8), ("MRTD", 48), ("MRCONFIGID", 48), ("MROWNER", 48),
        ("MROWNERCONFIG", 48), ("RTMR0", 48), ("RTMR1", 48), ("RTMR2", 48), ("RTMR3", 48), ("REPORTDATA", 64))]
    extra: dict[str, bytes] = {}
    if size == BODY_15_SIZE:
        extra = {"tee_tcb_svn2": r.take(16, "TEE_TCB_SVN2"), "mr_service_td": r.take(48, "MRSERVICETD")}
    return TdReportBody(*fields[:10], rtmr=(fields[10], fields[11], fields[12], fields[13]),  # type: ignore[arg-type]
                        report_data=fields[14], **extra)


def parse_enclave_report(raw: bytes) -> EnclaveReport:
    if len(raw) != ENCLAVE_REPORT_SIZE:
        raise EvidenceError(f"QE report is {len(raw)} bytes, expected {ENCLAVE_REPORT_SIZE}")
    r = _Reader(raw, "QE report")
    cpu_svn = r.take(16, "CPUSVN")
    misc = r.u32("MISCSELECT")
    r.take(28, "reserved")
    attributes = r.take(16, "ATTRIBUTES")
    mr_enclave = r.take(32, "MRENCLAVE")
    r.take(32, "reserved")
    mr_signer = r.take(32, "MRSIGNER")
    r.take(96, "reserved")
    prod = r.u16("ISVPRODID")
    svn = r.u16("ISVSVN")
    r.take(60, "reserved")
    report_data = r.take(64, "REPORTDATA")
    return EnclaveReport(raw, cpu_svn, misc, attributes, mr_enclave, mr_signer, prod, svn, report_data)


def _parse_header(r: _Reader) -> QuoteHeader:
    version = r.u16("version")
    att_key_type = r.u16("attestation key type")
    tee_type = r.u32("TEE type")
    qe_svn = r.u16("QE SVN")
    pce_svn = r.u16("PCE SVN")
    vendor = r.take(16, "QE vendor id")
    user_data = r.take(20, "user data")
    if version not in (4, 5):
        raise EvidenceError(f"quote version {version} is not a TDX quote version this verifier reads (4 or 5)",
                            hint="SGX v3 quotes are not TDX evidence")
    if tee_type != TEE_TYPE_TDX:
        raise EvidenceError(f"quote TEE type is {tee_type:#x}, expected {TEE_TYPE_TDX:#x} (TDX)")
    if att_key_type != ATT_KEY_ECDSA_P256:
        raise EvidenceError(f"attestation key type {att_key_type} is not supported (only 2, ECDSA-256-with-P-256)")
    return QuoteHeader(version, att_key_type, tee_type, qe_svn, pce_svn, vendor, user_data)


def parse_quote(raw: bytes) -> TdxQuote:
    if not isinstance(raw, bytes | bytearray):
        raise EvidenceError("a TDX quote must be bytes")
    raw = bytes(raw)
    if len(raw) > MAX_QUOTE_SIZE:
        raise EvidenceError(f"TDX quote is {len(raw)} bytes; refusing anything over {MAX_QUOTE_SIZE}")
    r = _Reader(raw, "TDX quote")
    header = _parse_header(r)
    if header.version == 4:
        body_type, body_size = 2, BODY_10_SIZE
    else:
        body_type = r.u16("body type")
        body_size = r.u32("body size")
        if body_type not in BODY_TYPES:
            raise EvidenceError(f"quote v5 body type {body_type} is not supported (2 = TDX 1.0, 3 = TDX 1.5)")
        if body_size != BODY_TYPES[body_type][1]:
            raise EvidenceError(f"quote v5 body type {body_type} declares {body_size} bytes, expected "
                                f"{BODY_TYPES[body_type][1]}")
    body = _parse_body(r, body_size)
    signed = raw[:r.pos]
    sig_len = r.u32("signature data length")
    sig = _Reader(r.take(sig_len, "signature data"), "quote signature data")
    trailing = len(raw) - r.pos
    signature = sig.take(SIGNATURE_SIZE, "quote signature")
    attest_key = sig.take(ATTEST_KEY_SIZE, "attestation key")
    cert_type = sig.u16("certification data type")
    cert_size = sig.u32("certification data size")
    if cert_type != CERT_TYPE_QE_REPORT:
        raise EvidenceError(f"outer certification data type is {cert_type}, expected {CERT_TYPE_QE_REPORT} "
                            "(QE report certification data)")
    inner = _Reader(sig.take(cert_size, "QE report certification data"), "QE report certification data")
    qe_report = parse_enclave_report(inner.take(ENCLAVE_REPORT_SIZE, "QE report"))
    qe_sig = inner.take(SIGNATURE_SIZE, "QE report signature")
    auth_len = inner.u16("QE auth data size")
    auth = inner.take(auth_len, "QE auth data")
    pck_type = inner.u16("PCK certification data type")
    pck_size = inner.u32("PCK certification data size")
    if pck_type != CERT_TYPE_PCK_CHAIN:
        raise EvidenceError(f"inner certification data type is {pck_type}, expected {CERT_TYPE_PCK_CHAIN} "
                            "(PCK certificate chain)", hint="quotes without an embedded PCK chain need the "
                                                            "chain supplied with the collateral")
    pck = inner.take(pck_size, "PCK certificate chain")
    return TdxQuote(raw=raw, header=header, body_type=body_type, body=body, signed=signed, signature=signature,
                    attest_key=attest_key, qe_report=qe_report, qe_report_signature=qe_sig, qe_auth_data=auth,
                    pck_chain_pem=pck.rstrip(b"\0"), trailing=trailing)


def td_report_body_bytes(body: TdReportBody) -> bytes:
    """Serialise a TD report body (the simulator builds quotes with this)."""
    parts = [body.tee_tcb_svn, body.mr_seam, body.mr_signer_seam, body.seam_attributes, body.td_attributes,
             body.xfam, body.mr_td, body.mr_config_id, body.mr_owner, body.mr_owner_config, *body.rtmr,
             body.report_data]
    if body.tee_tcb_svn2 is not None and body.mr_service_td is not None:
        parts += [body.tee_tcb_svn2, body.mr_service_td]
    return b"".join(parts)
