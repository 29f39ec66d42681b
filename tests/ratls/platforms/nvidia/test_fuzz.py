"""The GPU report, opaque-data, chain and FWID-extension parsers never raise anything but
typed errors, whatever the bytes; a mutated report that still parses never verifies."""

from __future__ import annotations

import base64
import struct

from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratls.errors import EvidenceError
from ratls.platforms.nvidia.abi import decode_report_input, parse_opaque, parse_report
from ratls.platforms.nvidia.certs import dice_tcb_fwid, hopper_fwid, leaf_fwid, parse_chain_pem, verify_chain
from ratls.platforms.nvidia.types import OpaqueType
from ratls.platforms.nvidia.verify import verify_gpu_evidence

from . import gen
from .conftest import VECTORS_NOW

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CHAIN = gen.make_chain()
REPORT = gen.make_report(CHAIN)
PEM = CHAIN.pem()
LEAF_DER = CHAIN.leaf.public_bytes(Encoding.DER)
HOPPER_EXT = gen.hopper_fwid_ext(CHAIN.leaf_key.public_key(), gen.FWID)
DICE_EXT = gen.dice_tcb_ext(gen.FWID)
HEADER = bytes([0x11, 0xE0, 0x01, 0xFF])


def typed(fn, data):  # type: ignore[no-untyped-def]
    try:
        return fn(data)
    except EvidenceError:
        return None


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """*data* with a few bytes flipped, inserted or deleted, and maybe truncated."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        choice = draw(st.sampled_from(["flip", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(out) - 1)))
        if choice == "flip" and out:
            out[at] ^= draw(st.integers(1, 255))
        elif choice == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif out:
            del out[at:at + draw(st.integers(1, 8))]
    if draw(st.booleans()):
        out = out[: draw(st.integers(0, len(out)))]
    return bytes(out)


@FUZZ
@given(st.one_of(st.binary(max_size=5000),
                 st.binary(min_size=33, max_size=600).map(lambda b: HEADER + b[:33] + b"\x11\x60\x00\x00" + b[33:])))
def test_report_parser_random(data: bytes) -> None:
    typed(parse_report, data)
    typed(decode_report_input, data)


@FUZZ
@given(mutated(REPORT))
def test_report_mutations_parse_typed_and_never_verify(raw: bytes) -> None:
    parsed = typed(parse_report, raw)
    result = verify_gpu_evidence("gpu0", raw, CHAIN.chain, gen.REQUEST_NONCE, [CHAIN.root], VECTORS_NOW)
    if raw != REPORT:
        assert not result.authentic
    if parsed is None:
        assert [c.name for c in result.checks] == ["gpu.parse"]


@FUZZ
@given(st.lists(st.tuples(st.one_of(st.sampled_from([int(t) for t in OpaqueType]), st.integers(0, 0xFFFF)),
                          st.binary(max_size=80)), max_size=12),
       st.binary(max_size=6))
def test_opaque_parser_structured(tlvs: list[tuple[int, bytes]], tail: bytes) -> None:
    data = b"".join(struct.pack("<HH", kind, len(value)) + value for kind, value in tlvs) + tail
    typed(parse_opaque, data)


@FUZZ
@given(st.binary(max_size=2000))
def test_opaque_parser_random(data: bytes) -> None:
    typed(parse_opaque, data)


@FUZZ
@given(st.one_of(st.text(alphabet="0123456789abcdefABCDEF \n", max_size=400).map(str.encode),
                 st.text(alphabet="ABCDEFabcdef0123456789+/= \n", max_size=400).map(str.encode),
                 st.binary(max_size=400).map(base64.b64encode)))
def test_input_decoder_text(data: bytes) -> None:
    decoded = typed(decode_report_input, data)
    if decoded is not None:
        typed(parse_report, decoded)


def as_pem(der_bytes: bytes) -> bytes:
    body = base64.encodebytes(der_bytes)
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"


@FUZZ
@given(st.one_of(st.binary(max_size=3000), mutated(PEM),
                 mutated(LEAF_DER).map(lambda d: as_pem(d) + CHAIN.root.public_bytes(Encoding.PEM))))
def test_chain_parser(data: bytes) -> None:
    certs = typed(parse_chain_pem, data)
    if certs:
        check = verify_chain(certs, [CHAIN.root], VECTORS_NOW)
        assert check.name == "gpu.chain"
        typed(leaf_fwid, certs[0])


@FUZZ
@given(mutated(PEM))
def test_chain_bytes_into_the_verifier(chain: bytes) -> None:
    result = verify_gpu_evidence("gpu0", REPORT, chain, gen.REQUEST_NONCE, [CHAIN.root], VECTORS_NOW)
    assert [c.name for c in result.checks] == ["gpu.parse", "gpu.nonce", "gpu.fwid", "gpu.chain", "gpu.signature"]


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(HOPPER_EXT), mutated(DICE_EXT)))
def test_fwid_extension_parsers(data: bytes) -> None:
    for parse in (hopper_fwid, dice_tcb_fwid):
        value = typed(parse, data)
        assert value is None or len(value) == 48
