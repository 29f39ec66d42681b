"""A minimal DER reader/writer for the few ASN.1 shapes this project meets.

`cryptography` hands unknown extensions over as raw DER; AMD's VCEK extensions and the
CMW extension are simple primitives (INTEGER, IA5String, OCTET STRING), so a full ASN.1
library would be more attack surface than help.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import EvidenceError

TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_UTF8_STRING = 0x0C
TAG_IA5_STRING = 0x16


@dataclass(frozen=True)
class Tlv:
    tag: int
    value: bytes
    end: int  # offset just past this element in the input


def read_tlv(data: bytes, offset: int = 0) -> Tlv:
    """Read one DER element (single-byte tags only) starting at *offset*."""
    if offset + 2 > len(data):
        raise EvidenceError("DER element truncated: no room for tag and length")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise EvidenceError("DER multi-byte tags are not supported here")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4:
            raise EvidenceError(f"DER length uses {n} octets; indefinite or oversized lengths are refused")
        if pos + n > len(data):
            raise EvidenceError("DER length truncated")
        length = int.from_bytes(data[pos : pos + n], "big")
        if length < 0x80 or data[pos] == 0:
            raise EvidenceError("DER length is not minimally encoded")
        pos += n
    end = pos + length
    if end > len(data):
        raise EvidenceError(f"DER element claims {length} bytes but only {len(data) - pos} remain")
    return Tlv(tag=tag, value=data[pos:end], end=end)


def read_single(data: bytes, expected_tag: int, what: str) -> bytes:
    """Decode *data* as exactly one element with *expected_tag*; return its contents."""
    tlv = read_tlv(data)
    if tlv.tag != expected_tag:
        raise EvidenceError(f"{what}: expected DER tag 0x{expected_tag:02x}, found 0x{tlv.tag:02x}")
    if tlv.end != len(data):
        raise EvidenceError(f"{what}: {len(data) - tlv.end} trailing bytes after the DER value")
    return tlv.value


def read_integer(data: bytes, what: str) -> int:
    content = read_single(data, TAG_INTEGER, what)
    if not content:
        raise EvidenceError(f"{what}: empty INTEGER")
    return int.from_bytes(content, "big", signed=True)


def read_ia5(data: bytes, what: str) -> str:
    content = read_single(data, TAG_IA5_STRING, what)
    try:
        return content.decode("ascii")
    except UnicodeDecodeError as exc:
        raise EvidenceError(f"{what}: IA5String is not ASCII") from exc


def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + encode_length(len(content)) + content


def encode_octet_string(content: bytes) -> bytes:
    return encode(TAG_OCTET_STRING, content)
