"""TDX and Azure parsers (and the TDX verifier) never raise anything but typed errors, whatever
the bytes: random input and random mutations of valid evidence."""

from __future__ import annotations

import datetime as dt
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratls.errors import EvidenceError, UnreadableEvidence
from ratls.platforms.azure.evidence import parse_azure_evidence
from ratls.platforms.azure.hcl import parse_hcl_report
from ratls.platforms.azure.tpm import parse_tpm_quote
from ratls.platforms.sim.tdx_chain import generate_tdx_chain
from ratls.platforms.tdx.abi import parse_enclave_report, parse_quote
from ratls.platforms.tdx.verify import TdxTrust, verify_tdx

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CHAIN = generate_tdx_chain()
QUOTE = CHAIN.sign_quote(CHAIN.body(bytes(64)))
NOW = dt.datetime.now(dt.UTC)


def _typed(fn, data):  # type: ignore[no-untyped-def]
    try:
        return fn(data)
    except EvidenceError:
        return None


@FUZZ
@given(st.one_of(st.binary(max_size=6000), st.binary(min_size=632, max_size=700).map(lambda b: b"\x04\x00\x02\x00"
                                                                                      b"\x81\x00\x00\x00" + b)))
def test_quote_parser_random(data: bytes) -> None:
    _typed(parse_quote, data)


@FUZZ
@given(st.data())
def test_quote_mutations_parse_or_fail_typed_and_never_verify(data: st.DataObject) -> None:
    quote = bytearray(QUOTE)
    for _ in range(data.draw(st.integers(1, 4))):
        quote[data.draw(st.integers(0, len(quote) - 1))] ^= data.draw(st.integers(1, 255))
    if data.draw(st.booleans()):
        quote = quote[: data.draw(st.integers(0, len(quote)))]
    parsed = _typed(parse_quote, bytes(quote))
    if parsed is None:
        return
    verified = verify_tdx(parsed, CHAIN.collateral, TdxTrust(root=CHAIN.root, simulated=True), NOW)
    if bytes(quote) != QUOTE[: len(quote)] or len(quote) != len(QUOTE):
        # any change to the signed region, the signature data or the chain must be caught; only
        # bytes outside everything signed (none exist in a quote we built) could pass
        signed_region_changed = bytes(quote[:len(parsed.signed)]) != QUOTE[:len(parsed.signed)]
        if signed_region_changed:
            assert not verified.authentic


@FUZZ
@given(st.binary(max_size=400))
def test_enclave_report_parser(data: bytes) -> None:
    _typed(parse_enclave_report, data)


@FUZZ
@given(st.one_of(st.binary(max_size=3000), st.binary(min_size=1300, max_size=2600).map(lambda b: b"HCLA" + b)))
def test_hcl_parser(data: bytes) -> None:
    report = _typed(parse_hcl_report, data)
    if report is not None:
        _typed(lambda r: r.attestation_key(), report)


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.binary(max_size=200).map(lambda b: b"\xffTCG\x80\x18" + b)))
def test_tpm_quote_parser(data: bytes) -> None:
    _typed(parse_tpm_quote, data)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                       max_size=4), max_leaves=20)


@FUZZ
@given(st.one_of(st.binary(max_size=500), json_values.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(st.sampled_from(["version", "tpm_quote", "hcl_report", "td_quote", "quote",
                                                  "report", "vcek"]), json_values, max_size=5)
                 .map(lambda v: json.dumps(v).encode())))
def test_azure_evidence_parser(data: bytes) -> None:
    _typed(parse_azure_evidence, data)


POLICY = None


def _policy():  # type: ignore[no-untyped-def]
    from ratls.policy import parse_policy

    global POLICY
    if POLICY is None:
        POLICY = parse_policy({"version": 1, "platforms": ["sev-snp", "tdx", "azure-snp-vtpm", "azure-tdx-vtpm"],
                               "allow_simulated": True, "simulated": {"root_sha256": CHAIN.root_sha256},
                               "tdx": {"mrtd": ["00" * 48]}, "sev-snp": {"measurements": ["00" * 48]},
                               "vtpm": {"pcrs": {7: "00" * 32}}})
    return POLICY


@FUZZ
@given(st.sampled_from(["tdx", "sim-tdx", "azure-snp-vtpm", "azure-tdx-vtpm", "sev-snp", "sim"]),
       st.one_of(st.binary(max_size=3000), st.just(QUOTE), json_values.map(lambda v: json.dumps(v).encode())),
       st.dictionaries(st.sampled_from(["tdx-collateral", "vcek", "ask", "ark", "chain"]),
                       st.one_of(st.binary(max_size=200), st.just(CHAIN.collateral)), max_size=2))
def test_pipeline_never_crashes_and_never_accepts_garbage(platform: str, raw: bytes, ends: dict) -> None:  # type: ignore[type-arg]
    from ratls import registry
    from ratls.evidence import Evidence
    from ratls.pipeline import verify_evidence

    media = registry.get(platform).media_type
    try:
        appraisal = verify_evidence(Evidence(platform, media, raw, ends), policy=_policy(), now=NOW)
    except UnreadableEvidence:
        # raw evidence given by the caller in no layout the verifier reads: bad input, no verdict
        assert platform.startswith("azure-")
        return
    assert not appraisal.ok
