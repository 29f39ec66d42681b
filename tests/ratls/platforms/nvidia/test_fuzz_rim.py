"""Fuzzing the RIM reader and verifier: random bytes and mutated valid RIMs. Only EvidenceError
may escape parse_rim; verify_rim never raises, and whatever it accepts carries exactly the
values that were signed."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratls.errors import EvidenceError
from ratls.platforms.nvidia.rim import parse_rim
from ratls.platforms.nvidia.rim_verify import shipped_rim_root, verify_rim
from ratls.platforms.nvidia.types import Rim, RimKind

from .rim_testlib import DRIVER_TEST, T_2024, T_NOW, digest, sim_signer

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Fragments that mean something to an XML parser or to XML-DSig.
TOKENS = [b"<", b">", b"&", b"&amp;", b'"', b"'", b"/>", b"<!--", b"-->", b"<![CDATA[", b"]]>", b"<!DOCTYPE x>",
          b'<!ENTITY e "x">', b"&e;", b"<?xml version='1.0'?>", b"\x00", b"\xff\xfe", b" ", b"\n",
          b'xmlns="urn:x"', b'Id="x"', b'URI="#x"', b"<ds:Signature>", b"</ds:Signature>", b"ns2:Hash1=\"00\""]


@cache
def sim_rim() -> bytes:
    return sim_signer().sign({7: (True, (digest(7),)), 21: (True, (digest(1), digest(21)))})


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(data) - 1))
        operation = draw(st.sampled_from(["flip", "insert", "delete", "duplicate"]))
        if operation == "flip":
            data[position] = draw(st.integers(0, 255))
        elif operation == "insert":
            data[position:position] = draw(st.sampled_from(TOKENS) | st.binary(min_size=1, max_size=8))
        elif operation == "delete":
            del data[position:position + draw(st.integers(1, 64))]
        else:
            data[position:position] = data[position:position + draw(st.integers(1, 200))]
    return bytes(data)


def parse_or_refuse(data: bytes) -> Rim | None:
    try:
        return parse_rim(data)
    except EvidenceError:
        return None


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    assert parse_or_refuse(data) is None


@FUZZ
@given(st.binary(max_size=256).map(lambda tail: b"<SoftwareIdentity xmlns='http://standards.iso.org/iso/19770/-2/"
                                                b"2015/schema.xsd'>" + tail))
def test_random_bytes_after_a_valid_start(data: bytes) -> None:
    parse_or_refuse(data)


@FUZZ
@given(mutated(sim_rim()))
def test_mutated_sim_rim(data: bytes) -> None:
    parse_or_refuse(data)
    result = verify_rim(data, RimKind.DRIVER, [sim_signer().root], T_NOW, expected_version="550.90.07",
                        expected_product="GH100")
    if result.ok:
        assert result.rim is not None
        assert result.rim.measurements == parse_rim(sim_rim()).measurements
        assert (result.rim.version, result.rim.product) == ("550.90.07", "GH100")


@cache
def vector_rim(path: Path) -> bytes:
    return path.read_bytes()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_nvidia_rim(nvidia_vectors: Path, data: st.DataObject) -> None:
    original = vector_rim(nvidia_vectors / DRIVER_TEST)
    document = data.draw(mutated(original))
    parse_or_refuse(document)
    result = verify_rim(document, RimKind.DRIVER, [shipped_rim_root()], T_2024, expected_version="545.00",
                        expected_product="GH100")
    if result.ok:
        assert result.rim is not None and result.rim.measurements == parse_rim(original).measurements
