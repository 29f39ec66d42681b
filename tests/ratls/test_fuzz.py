"""Parsers never raise anything but the typed errors, whatever the bytes."""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratls import cbor, cmw
from ratls.cert import parse_ratls
from ratls.claims import decode_claims
from ratls.errors import EvidenceError
from ratls.pipeline import verify_certificate
from ratls.platforms.snp.abi import REPORT_SIZE, encode_cert_table, parse_cert_table, parse_report

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.one_of(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE), st.binary(max_size=2000)))
def test_report_parser(data: bytes) -> None:
    try:
        parse_report(data)
    except EvidenceError:
        pass


@FUZZ
@given(st.binary(max_size=600))
def test_cert_table_parser(data: bytes) -> None:
    try:
        parse_cert_table(data)
    except EvidenceError:
        pass


@FUZZ
@given(st.data())
def test_cert_table_mutations(data: st.DataObject) -> None:
    table = bytearray(encode_cert_table({"vcek": b"v" * 40, "ask": b"a" * 20}))
    for _ in range(data.draw(st.integers(1, 4))):
        table[data.draw(st.integers(0, len(table) - 1))] = data.draw(st.integers(0, 255))
    try:
        parse_cert_table(bytes(table))
    except EvidenceError:
        pass


@FUZZ
@given(st.binary(max_size=400))
def test_cbor_and_cmw_and_claims(data: bytes) -> None:
    for fn in (cbor.decode, cmw.decode_collection, cmw.decode_extension_value, decode_claims):
        try:
            fn(data)
        except EvidenceError:
            pass


cbor_values = st.recursive(
    st.one_of(st.integers(-(2**64) + 1, 2**64 - 1), st.binary(max_size=20), st.text(max_size=10), st.booleans(),
              st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=12,
)


@FUZZ
@given(cbor_values)
def test_cbor_round_trip(value: object) -> None:
    assert cbor.decode(cbor.encode(value)) == value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.data())
def test_certificate_mutations(sim_chain, data: st.DataObject) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from ratls.cert import generate_key, load_x509
    from ratls.issue import issue_certificate
    from ratls.platforms.sim.platform import SimPlatform

    global _CERT
    if "_CERT" not in globals():
        now = dt.datetime.now(dt.UTC)
        _CERT = issue_certificate(SimPlatform(chain=sim_chain), generate_key(), now=now).cert.public_bytes(
            Encoding.DER)
    der = bytearray(_CERT)
    for _ in range(data.draw(st.integers(1, 3))):
        der[data.draw(st.integers(0, len(der) - 1))] ^= data.draw(st.integers(1, 255))
    try:
        parse_ratls(load_x509(bytes(der)))
    except EvidenceError:
        pass
    # The full pipeline turns every malformed input into a failed verdict, never an exception.
    appraisal, _ = verify_certificate(bytes(der), policy=None, now=dt.datetime.now(dt.UTC))
    assert appraisal.checks
