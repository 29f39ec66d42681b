"""NVIDIA GPU SPDM evidence bytes <-> typed values. Parsing only: nothing here verifies.

A GPU attestation report is an SPDM 1.1 ``GET_MEASUREMENTS`` request followed by the GPU's
``MEASUREMENTS`` response (DMTF DSP0274 1.1, NVIDIA's opaque data on top):

    request (37):  version 0x11 | 0xE0 | param1 (bit0: sign) | param2 (0xFF: all blocks) | nonce (32) | slot
    response:      version | 0x60 | param1 | param2 | NumberOfBlocks u8 | record length u24 LE |
                   measurement blocks | nonce (32, chosen by the GPU) | opaque length u16 LE |
                   opaque TLVs (type u16 LE | length u16 LE | value) | signature (96, ECDSA P-384 r||s)
    block:         index u8 | MeasurementSpecification u8 (0x01 DMTF) | size u16 LE |
                   DMTF: value type u8 | value size u16 LE | value

The signature covers everything before it, request included. The parse is strict where
NVIDIA's verifiers are lenient (exact lengths, no duplicates, nothing after the signature):
bytes that are not signed, or signed bytes read two ways, are how a verifier gets fooled.
"""

from __future__ import annotations

import base64
import binascii
import re
import string
import struct
from collections.abc import Callable, Iterable, Mapping

from ...errors import EvidenceError, UnreadableEvidence
from .types import (
    NONCE_LEN,
    SIGNATURE_LEN,
    GpuArch,
    GpuReport,
    MeasurementBlock,
    OpaqueData,
    OpaqueType,
)

SPDM_VERSION_11 = 0x11
REQ_GET_MEASUREMENTS = 0xE0
RESP_MEASUREMENTS = 0x60
REQUEST_LEN = 4 + NONCE_LEN + 1
RESPONSE_HEADER_LEN = 8  # version, code, param1, param2, NumberOfBlocks, record length u24
PARAM1_SIGNATURE_REQUESTED = 0x01
PARAM2_ALL_BLOCKS = 0xFF
MEAS_SPEC_DMTF = 0x01
DMTF_HEADER_LEN = 3  # value type u8 + value size u16
VALUE_TYPE_GPU = 0x01  # DMTF value type of every block NVIDIA's GPUs send
BLOCK_HEADER_LEN = 4  # index, specification, size u16
# SPDM reserves index 0 (ask for the block count) and 0xFF (ask for all blocks) as request
# values; NVIDIA's GPUs send blocks 1..64 and their RIMs name indices 0..63 (SPDM index - 1).
MIN_BLOCK_INDEX = 1
MAX_BLOCK_INDEX = 64
MAX_REPORT_SIZE = 1 << 20  # real reports are ~4 KiB; refuse absurd input before reading it
MAX_INPUT_SIZE = 4 << 20  # hex/base64 text of a MAX_REPORT_SIZE report, with room for line breaks
HINT = "give the complete report (GET_MEASUREMENTS request || MEASUREMENTS response) as the GPU produced it"

# Types whose length NVIDIA's firmware fixes; a different length is a malformed report.
FIXED_LENGTHS: dict[int, int] = {
    OpaqueType.VBIOS_VERSION: 8,
    OpaqueType.NVDEC0_STATUS: 1,
    OpaqueType.FWID: 48,
    OpaqueType.PROTECTED_PCIE_STATUS: 1,
    OpaqueType.OPAQUE_DATA_VERSION: 2,
    OpaqueType.FEATURE_FLAG: 2,
}
# Types that are arrays of fixed-size items (MSRSCNT: u32 per block, SWITCH_PDI: 8 B per switch).
ITEM_LENGTHS: dict[int, int] = {OpaqueType.MSRSCNT: 4, OpaqueType.SWITCH_PDI: 8}
_PRINTABLE = frozenset(string.printable.encode()) - frozenset(b"\t\n\r\x0b\x0c")
_RIM_ID_PART = re.compile(r"[A-Za-z0-9._-]+")
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


class _Reader:
    """Bounds-checked little-endian reader; every error names the field and its offset."""

    def __init__(self, data: bytes, what: str, base: int = 0) -> None:
        self.data, self.pos, self.what, self.base = data, 0, what, base

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, field: str) -> bytes:
        if n > self.left():
            raise EvidenceError(f"{self.what} is truncated: {field} needs {n} bytes at offset {self.offset}, "
                                f"only {self.left()} left", hint=HINT)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return int(struct.unpack("<H", self.take(2, field))[0])

    def u24(self, field: str) -> int:
        return int.from_bytes(self.take(3, field), "little")


# --- input decoding --------------------------------------------------------------------------

def decode_report_input(data: bytes) -> bytes:
    """The report from a file's bytes: raw binary, or the hex text (NVIDIA/trustee samples) or
    base64 text (NVIDIA's evidence JSON) vendors store it as. Whitespace in text is ignored.

    Hex wins over base64 when both would decode: a base64 report made only of hex digits with
    an even length does not occur (byte 1 is 0xE0), while every hex report is valid base64."""
    if not isinstance(data, bytes | bytearray):
        raise UnreadableEvidence("a GPU report must be bytes")
    if len(data) > MAX_INPUT_SIZE:
        raise UnreadableEvidence(f"GPU report input is {len(data)} bytes; refusing anything over {MAX_INPUT_SIZE}")
    text = b"".join(bytes(data).split())
    if not text:
        raise UnreadableEvidence("GPU report is empty", hint=HINT)
    if len(text) % 2 == 0 and set(text) <= _HEX_DIGITS:
        return bytes.fromhex(text.decode("ascii"))
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if decoded:
        return decoded
    if set(text) <= _PRINTABLE:
        kind = "hex of odd length" if set(text) <= _HEX_DIGITS else "neither hex nor base64"
        raise UnreadableEvidence(f"GPU report is text but {kind} (first bytes {text[:16]!r})", hint=HINT)
    return bytes(data)


# --- parsing -----------------------------------------------------------------------------------

def parse_report(raw: bytes) -> GpuReport:
    """Strictly parse request || response. ``UnreadableEvidence``: not an SPDM 1.1
    GET_MEASUREMENTS report at all; ``EvidenceError``: such a report, but malformed."""
    if not isinstance(raw, bytes | bytearray):
        raise UnreadableEvidence("a GPU report must be bytes")
    raw = bytes(raw)
    if len(raw) > MAX_REPORT_SIZE:
        raise UnreadableEvidence(f"GPU report is {len(raw)} bytes; refusing anything over {MAX_REPORT_SIZE}")
    request_nonce = _parse_request(raw)
    r = _Reader(raw, "GPU report")
    r.take(REQUEST_LEN, "request")
    version = _parse_response_header(r)
    count = r.u8("NumberOfBlocks")
    record_len = r.u24("MeasurementRecordLength")
    record_at = r.offset
    blocks = _parse_record(r.take(record_len, "measurement record"), count, record_at)
    response_nonce = r.take(NONCE_LEN, "response nonce")
    opaque_len = r.u16("OpaqueLength")
    opaque_at = r.offset
    opaque = parse_opaque(r.take(opaque_len, "opaque data"), base=opaque_at)
    signature = r.take(SIGNATURE_LEN, "signature")
    if r.left():
        raise EvidenceError(f"GPU report has {r.left()} trailing byte(s) after the {SIGNATURE_LEN}-byte signature "
                            f"at offset {r.offset}: the signature must be the last {SIGNATURE_LEN} bytes",
                            hint="remove nothing silently: trailing bytes are not signed")
    return GpuReport(raw=raw, request_nonce=request_nonce, response_nonce=response_nonce, spdm_version=version,
                     blocks=blocks, opaque=opaque, signature=signature)


def _parse_request(raw: bytes) -> bytes:
    """Check the 37-byte GET_MEASUREMENTS request; return its nonce (the verifier's challenge)."""
    if len(raw) < REQUEST_LEN:
        raise UnreadableEvidence(f"GPU report is {len(raw)} bytes: too short for the {REQUEST_LEN}-byte SPDM "
                                 "GET_MEASUREMENTS request it starts with", hint=HINT)
    if raw[1] != REQ_GET_MEASUREMENTS:
        raise UnreadableEvidence(f"byte 1 is {raw[1]:#04x}, not {REQ_GET_MEASUREMENTS:#04x} (SPDM GET_MEASUREMENTS): "
                                 "this is not an NVIDIA GPU attestation report", hint=HINT)
    if raw[0] != SPDM_VERSION_11:
        raise UnreadableEvidence(f"byte 0 (SPDM version) is {raw[0]:#04x}; this verifier reads SPDM 1.1 "
                                 f"({SPDM_VERSION_11:#04x}) only")
    if not raw[2] & PARAM1_SIGNATURE_REQUESTED:
        raise EvidenceError(f"request param1 at offset 2 is {raw[2]:#04x}: the request did not ask for a "
                            "signature, so the response cannot be authenticated")
    return raw[4:4 + NONCE_LEN]


def _parse_response_header(r: _Reader) -> int:
    at = r.offset
    version = r.u8("response SPDM version")
    code = r.u8("response code")
    if version != SPDM_VERSION_11:
        raise EvidenceError(f"response SPDM version at offset {at} is {version:#04x}, the request's is "
                            f"{SPDM_VERSION_11:#04x}")
    if code != RESP_MEASUREMENTS:
        raise EvidenceError(f"response code at offset {at + 1} is {code:#04x}, not {RESP_MEASUREMENTS:#04x} "
                            "(MEASUREMENTS); 0x7f is an SPDM ERROR response")
    r.take(2, "response param1/param2")  # param2 = slot id; neither changes the layout
    return version


def _parse_record(record: bytes, count: int, base: int) -> dict[int, MeasurementBlock]:
    r = _Reader(record, "measurement record", base)
    blocks: dict[int, MeasurementBlock] = {}
    while r.left():
        at = r.offset
        block = _parse_block(r)
        if block.index in blocks:
            raise EvidenceError(f"measurement block at offset {at} repeats index {block.index}")
        blocks[block.index] = block
    if len(blocks) != count:
        raise EvidenceError(f"NumberOfBlocks is {count} but the {len(record)}-byte measurement record at offset "
                            f"{base} holds {len(blocks)} block(s)")
    return blocks


def _parse_block(r: _Reader) -> MeasurementBlock:
    at = r.offset
    index = r.u8("block index")
    spec = r.u8("MeasurementSpecification")
    size = r.u16("MeasurementSize")
    if not MIN_BLOCK_INDEX <= index <= MAX_BLOCK_INDEX:
        raise EvidenceError(f"measurement block at offset {at} has index {index}; blocks are numbered "
                            f"{MIN_BLOCK_INDEX}..{MAX_BLOCK_INDEX} (0 and 255 are SPDM request values)")
    if spec != MEAS_SPEC_DMTF:
        raise EvidenceError(f"measurement block {index} at offset {at} has MeasurementSpecification {spec:#04x}, "
                            f"not {MEAS_SPEC_DMTF:#04x} (DMTF)")
    body = _Reader(r.take(size, f"measurement block {index}"), f"measurement block {index}", r.offset - size)
    value_type = body.u8("DMTF value type")
    value_size = body.u16("DMTF value size")
    if value_size != size - DMTF_HEADER_LEN:
        raise EvidenceError(f"measurement block {index} at offset {at}: DMTF value size {value_size} does not "
                            f"match MeasurementSize {size} - {DMTF_HEADER_LEN}")
    return MeasurementBlock(index=index, value_type=value_type, value=body.take(value_size, "DMTF value"))


def parse_opaque(data: bytes, base: int = 0) -> OpaqueData:
    """The opaque-data TLVs. Unknown types are kept (newer firmware adds fields); known types
    must have their documented length; no type may appear twice. *base*: offset for messages."""
    r = _Reader(bytes(data), "opaque data", base)
    fields: dict[int, bytes] = {}
    offsets: dict[int, int] = {}
    while r.left():
        at = r.offset
        kind = r.u16("opaque field type")
        length = r.u16("opaque field length")
        value = r.take(length, f"opaque field {_type_name(kind)}")
        if kind in fields:
            raise EvidenceError(f"opaque field {_type_name(kind)} at offset {at} appears twice")
        _check_length(kind, length, at)
        fields[kind], offsets[kind] = value, at
    return _typed_opaque(fields, offsets)


def _type_name(kind: int) -> str:
    try:
        return f"{OpaqueType(kind).name} ({kind})"
    except ValueError:
        return f"type {kind}"


def _check_length(kind: int, length: int, at: int) -> None:
    fixed = FIXED_LENGTHS.get(kind)
    if fixed is not None and length != fixed:
        raise EvidenceError(f"opaque field {_type_name(kind)} at offset {at} is {length} bytes, expected {fixed}")
    item = ITEM_LENGTHS.get(kind)
    if item is not None and length % item:
        raise EvidenceError(f"opaque field {_type_name(kind)} at offset {at} is {length} bytes, "
                            f"not a multiple of {item}")


def _typed_opaque(fields: dict[int, bytes], offsets: dict[int, int]) -> OpaqueData:
    def text(kind: OpaqueType, upper: bool = True) -> str | None:
        value = fields.get(kind)
        if value is None:
            return None
        decoded = _nul_terminated(value, kind, offsets[kind])
        return decoded.upper() if upper else decoded

    def number(kind: OpaqueType) -> int | None:
        value = fields.get(kind)
        return int.from_bytes(value, "little") if value is not None else None

    driver = text(OpaqueType.DRIVER_VERSION, upper=False)
    if driver == "":
        raise EvidenceError(f"opaque field DRIVER_VERSION (3) at offset {offsets[OpaqueType.DRIVER_VERSION]} is empty")
    vbios = fields.get(OpaqueType.VBIOS_VERSION)
    return OpaqueData(
        fields=fields, driver_version=driver, vbios_version=vbios_version_text(vbios) if vbios is not None else None,
        project=text(OpaqueType.PROJECT), project_sku=text(OpaqueType.PROJECT_SKU),
        chip_sku=text(OpaqueType.CHIP_SKU), chip_info=text(OpaqueType.CHIP_INFO),
        fwid=fields.get(OpaqueType.FWID), nvdec0_status=number(OpaqueType.NVDEC0_STATUS),
        feature_flag=number(OpaqueType.FEATURE_FLAG), opaque_data_version=number(OpaqueType.OPAQUE_DATA_VERSION))


def _nul_terminated(value: bytes, kind: OpaqueType, at: int) -> str:
    """ASCII text padded with NULs: printable up to the first NUL, nothing but NULs after it."""
    head, _, tail = value.partition(b"\0")
    if tail.strip(b"\0") or not set(head) <= _PRINTABLE:
        raise EvidenceError(f"opaque field {kind.name} ({int(kind)}) at offset {at} is not NUL-padded printable "
                            f"ASCII: {value[:32].hex()}")
    return head.decode("ascii")


def vbios_version_text(raw8: bytes) -> str:
    """NVIDIA's VBIOS version text from the 8-byte field: reverse the bytes, take hex digits
    8..15 then 6..7, dot the pairs: ``0074009620000000`` -> ``96.00.74.00.20`` (lower case)."""
    if len(raw8) != 8:
        raise EvidenceError(f"VBIOS version is {len(raw8)} bytes, expected 8")
    h = bytes(reversed(raw8)).hex()
    digits = h[8:16] + h[6:8]
    return ".".join(digits[i:i + 2] for i in range(0, len(digits), 2))


# --- RIM identifiers ---------------------------------------------------------------------------

def rim_ids(report: GpuReport, arch: GpuArch) -> tuple[str, str]:
    """(driver RIM id, VBIOS RIM id) as NVIDIA's RIM service names them. Every part must be
    a plain token: these strings become URL paths."""
    o = report.opaque
    driver = _rim_part(o.driver_version, "DRIVER_VERSION")
    if arch == GpuArch.HOPPER:
        driver_id = f"NV_GPU_DRIVER_GH100_{driver}"
    else:
        # NVIDIA's C++ SDK falls back to GB100 when the GPU sends no CHIP_INFO (575 drivers)
        chip = _rim_part(o.chip_info, "CHIP_INFO") if o.chip_info else "GB100"
        driver_id = f"NV_GPU_CC_DRIVER_{chip}_{driver}"
    vbios = _rim_part(o.vbios_version, "VBIOS_VERSION").replace(".", "").upper()
    parts = [_rim_part(o.project, "PROJECT"), _rim_part(o.project_sku, "PROJECT_SKU"),
             _rim_part(o.chip_sku, "CHIP_SKU")]
    return driver_id, f"NV_GPU_VBIOS_{'_'.join(parts)}_{vbios}"


def _rim_part(value: str | None, name: str) -> str:
    if not value:
        raise EvidenceError(f"the report has no {name} opaque field, so its RIM cannot be named")
    if not _RIM_ID_PART.fullmatch(value):
        raise EvidenceError(f"opaque field {name} {value!r} has characters a RIM id cannot contain")
    return value


# --- encoding (tests and the simulated GPU) ----------------------------------------------------

def encode_opaque(fields: Mapping[int, bytes]) -> bytes:
    """TLVs in the mapping's order (NVIDIA's GPUs do not sort them)."""
    out = bytearray()
    for kind, value in fields.items():
        if not 0 <= kind <= 0xFFFF or len(value) > 0xFFFF:
            raise ValueError(f"opaque field {kind} does not fit a u16 type and u16 length")
        out += struct.pack("<HH", kind, len(value)) + bytes(value)
    return bytes(out)


def encode_block(block: MeasurementBlock) -> bytes:
    dmtf = struct.pack("<BH", block.value_type, len(block.value)) + block.value
    return struct.pack("<BBH", block.index, MEAS_SPEC_DMTF, len(dmtf)) + dmtf


def _as_blocks(blocks: Iterable[MeasurementBlock] | Mapping[int, MeasurementBlock | bytes]) -> list[MeasurementBlock]:
    if not isinstance(blocks, Mapping):
        return list(blocks)
    return [v if isinstance(v, MeasurementBlock) else MeasurementBlock(i, VALUE_TYPE_GPU, bytes(v))
            for i, v in blocks.items()]


def encode_report(request_nonce: bytes,
                  blocks: Iterable[MeasurementBlock] | Mapping[int, MeasurementBlock | bytes],
                  opaque_fields: Mapping[int, bytes], response_nonce: bytes,
                  sign: Callable[[bytes], bytes]) -> bytes:
    """A report laid out as a GPU lays it out (request param1 0x01, param2 0xFF, slot 0;
    response param1/param2 0). *blocks*: measurement blocks, or SPDM index -> value (DMTF value
    type 0x01, as every NVIDIA block). *sign* gets every byte before the signature and returns
    the 96-byte r||s."""
    if len(request_nonce) != NONCE_LEN or len(response_nonce) != NONCE_LEN:
        raise ValueError(f"both nonces must be {NONCE_LEN} bytes")
    items = _as_blocks(blocks)
    record = b"".join(encode_block(b) for b in items)
    opaque = encode_opaque(opaque_fields)
    if len(items) > 0xFF or len(record) >= 1 << 24 or len(opaque) > 0xFFFF:
        raise ValueError("too many blocks, or a record or opaque data too long for its length field")
    request = bytes([SPDM_VERSION_11, REQ_GET_MEASUREMENTS, PARAM1_SIGNATURE_REQUESTED, PARAM2_ALL_BLOCKS])
    request += request_nonce + b"\0"
    response = bytes([SPDM_VERSION_11, RESP_MEASUREMENTS, 0, 0, len(items)]) + len(record).to_bytes(3, "little")
    response += record + response_nonce + struct.pack("<H", len(opaque)) + opaque
    signature = sign(request + response)
    if len(signature) != SIGNATURE_LEN:
        raise ValueError(f"sign() returned {len(signature)} bytes, expected {SIGNATURE_LEN} (r||s)")
    return request + response + signature
