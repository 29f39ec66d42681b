"""Deterministic CBOR (RFC 8949 §4.2.1) for the small data model RA-TLS needs.

Only unsigned/negative integers, byte strings, text strings, arrays, maps, booleans and
null are supported. Encoding is always the core deterministic form (preferred lengths,
map keys sorted by their encoded bytes). Decoding is strict: it refuses indefinite
lengths, tags, floats, duplicate keys, non-preferred lengths and trailing bytes, and it
bounds nesting depth, so two different byte strings never decode to the same value.
"""

from __future__ import annotations

from typing import Any

from .errors import EvidenceError

MAX_DEPTH = 16

CborValue = Any  # int | bytes | str | list | dict | bool | None


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([(major << 5) | value])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < (1 << (8 * size)):
            return bytes([(major << 5) | info]) + value.to_bytes(size, "big")
    raise ValueError("integer too large for CBOR")


def encode(value: CborValue) -> bytes:
    """Encode *value* in RFC 8949 core deterministic form."""
    out = bytearray()
    _encode_into(value, out)
    return bytes(out)


def _encode_into(value: CborValue, out: bytearray) -> None:
    if value is False:
        out.append(0xF4)
    elif value is True:
        out.append(0xF5)
    elif value is None:
        out.append(0xF6)
    elif isinstance(value, int):
        if value >= 0:
            out += _head(0, value)
        else:
            out += _head(1, -1 - value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        out += _head(2, len(data)) + data
    elif isinstance(value, str):
        data = value.encode("utf-8")
        out += _head(3, len(data)) + data
    elif isinstance(value, (list, tuple)):
        out += _head(4, len(value))
        for item in value:
            _encode_into(item, out)
    elif isinstance(value, dict):
        items = sorted((encode(k), encode(v)) for k, v in value.items())
        out += _head(5, len(items))
        for key, val in items:
            out += key + val
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as RA-TLS CBOR")


def decode(data: bytes, *, what: str = "CBOR") -> CborValue:
    """Strictly decode exactly one deterministic CBOR item from *data*."""
    try:
        value, end = _decode_at(bytes(data), 0, 0)
    except EvidenceError as exc:
        raise EvidenceError(f"{what}: {exc.message}") from None
    if end != len(data):
        raise EvidenceError(f"{what}: {len(data) - end} trailing bytes after the CBOR item")
    return value


def _read_head(data: bytes, pos: int) -> tuple[int, int, int]:
    if pos >= len(data):
        raise EvidenceError("truncated (expected another item)")
    initial = data[pos]
    major, info = initial >> 5, initial & 0x1F
    pos += 1
    if info < 24:
        return major, info, pos
    if info > 27:
        raise EvidenceError(f"indefinite lengths and reserved encodings are refused (byte 0x{initial:02x})")
    size = 1 << (info - 24)
    if pos + size > len(data):
        raise EvidenceError("truncated inside an item header")
    value = int.from_bytes(data[pos : pos + size], "big")
    minimum = 24 if size == 1 else 1 << (8 * (size // 2))
    if value < minimum:
        raise EvidenceError("a length or integer is not in its shortest (preferred) form")
    return major, value, pos + size


def _decode_at(data: bytes, pos: int, depth: int) -> tuple[CborValue, int]:
    if depth > MAX_DEPTH:
        raise EvidenceError(f"nesting deeper than {MAX_DEPTH} levels")
    start = pos
    major, arg, pos = _read_head(data, pos)
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        end = pos + arg
        if end > len(data):
            raise EvidenceError(f"string claims {arg} bytes but only {len(data) - pos} remain")
        raw = data[pos:end]
        if major == 2:
            return raw, end
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError:
            raise EvidenceError("text string is not valid UTF-8") from None
    if major == 4:
        if arg > len(data) - pos:
            raise EvidenceError(f"array claims {arg} items but the input is shorter")
        items = []
        for _ in range(arg):
            item, pos = _decode_at(data, pos, depth + 1)
            items.append(item)
        return items, pos
    if major == 5:
        if arg > (len(data) - pos) // 2:
            raise EvidenceError(f"map claims {arg} entries but the input is shorter")
        result: dict[Any, Any] = {}
        previous_key: bytes | None = None
        for _ in range(arg):
            key_start = pos
            key, pos = _decode_at(data, pos, depth + 1)
            key_bytes = data[key_start:pos]
            if isinstance(key, (list, dict)):
                raise EvidenceError("map keys must be integers or strings")
            if previous_key is not None and key_bytes <= previous_key:
                raise EvidenceError("map keys are duplicated or not in deterministic order")
            previous_key = key_bytes
            value, pos = _decode_at(data, pos, depth + 1)
            result[key] = value
        return result, pos
    if major == 6:
        raise EvidenceError("CBOR tags are not used by ratls/1 and are refused")
    # major 7: simple values and floats
    simple = data[start]
    if simple == 0xF4:
        return False, pos
    if simple == 0xF5:
        return True, pos
    if simple == 0xF6:
        return None, pos
    raise EvidenceError(f"unsupported CBOR simple value or float (byte 0x{simple:02x})")
