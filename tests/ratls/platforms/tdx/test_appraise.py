from __future__ import annotations

from pathlib import Path

import pytest

from ratls.errors import PolicyError
from ratls.evidence import Evidence
from ratls.pipeline import verify_evidence
from ratls.platforms.tdx.abi import parse_quote
from ratls.platforms.tdx.appraise import appraise_tdx
from ratls.platforms.tdx.platform import COLLATERAL_LABEL, MEDIA_TYPE
from ratls.platforms.tdx.verify import CollateralResult, VerifiedTdx
from ratls.policy import parse_policy

from .conftest import DCAP_V4_NOW

UP_TO_DATE = CollateralResult(status="UpToDate", advisory_ids=["INTEL-SA-00837"], tcb_eval_data_number=17)


def _policy(**tdx: object) -> object:
    return parse_policy({"version": 1, "platforms": ["tdx"], "tdx": tdx})


@pytest.fixture
def quote(tdx_vectors: Path):  # type: ignore[no-untyped-def]
    return parse_quote((tdx_vectors / "v4_dcap-qvl/quote.bin").read_bytes())


def _failed(checks: list) -> set[str]:  # type: ignore[type-arg]
    return {c.name for c in checks if not c.ok}


def test_strict_policy_accepts_the_vector_end_to_end(tdx_vectors: Path, quote) -> None:  # type: ignore[no-untyped-def]
    b = quote.body
    policy = _policy(mrtd=[b.mr_td.hex()], rtmr={0: b.rtmr[0].hex(), 1: [b.rtmr[1].hex()], 2: b.rtmr[2].hex()},
                     mrconfigid=[b.mr_config_id.hex()], mrowner=[b.mr_owner.hex()], sept_ve_disable=True,
                     accept_tcb_status=["UpToDate"], min_tcb_eval_data_number=17)
    ev = Evidence("tdx", MEDIA_TYPE, quote.raw, {COLLATERAL_LABEL:
                                                 (tdx_vectors / "v4_dcap-qvl/collateral.json").read_bytes()})
    a = verify_evidence(ev, policy=policy, now=DCAP_V4_NOW)  # type: ignore[arg-type]
    assert a.ok, [c for c in a.checks if not c.ok]


def test_no_mrtd_listed_fails_closed(quote) -> None:  # type: ignore[no-untyped-def]
    assert "policy.tdx.mrtd" in _failed(appraise_tdx(VerifiedTdx(quote, UP_TO_DATE), _policy().tdx))  # type: ignore[attr-defined]


@pytest.mark.parametrize(("key", "value", "check"), [
    ("mrtd", ["00" * 48], "policy.tdx.mrtd"),
    ("rtmr", {1: "11" * 48}, "policy.tdx.rtmr1"),
    ("mrconfigid", ["22" * 48], "policy.tdx.mrconfigid"),
    ("mrowner", ["33" * 48], "policy.tdx.mrowner"),
    ("mrownerconfig", ["44" * 48], "policy.tdx.mrownerconfig"),
    ("mrseam", ["55" * 48], "policy.tdx.mrseam"),
    ("accept_tcb_status", ["OutOfDate"], "policy.tdx.tcb-status"),
    ("reject_advisories", ["INTEL-SA-00837"], "policy.tdx.advisories"),
    ("min_tcb_eval_data_number", 18, "policy.tdx.tcb-eval-number"),
    ("report_data", "66" * 64, "policy.tdx.report-data"),
])
def test_each_rule_rejects(quote, key: str, value: object, check: str) -> None:  # type: ignore[no-untyped-def]
    rules = {"mrtd": [quote.body.mr_td.hex()], key: value}
    checks = appraise_tdx(VerifiedTdx(quote, UP_TO_DATE), _policy(**rules).tdx)  # type: ignore[attr-defined]
    assert check in _failed(checks)


def test_debug_td_rejected_by_strict_policy_and_allowed_when_asked(tdx_vectors: Path) -> None:
    debug = parse_quote((tdx_vectors / "v4_trustee/quote.bin").read_bytes())
    strict = _policy(mrtd=[debug.body.mr_td.hex()])
    assert "policy.tdx.debug" in _failed(appraise_tdx(VerifiedTdx(debug, UP_TO_DATE), strict.tdx))  # type: ignore[attr-defined]
    lax = _policy(mrtd=[debug.body.mr_td.hex()], debug=True)
    assert "policy.tdx.debug" not in _failed(appraise_tdx(VerifiedTdx(debug, UP_TO_DATE), lax.tdx))  # type: ignore[attr-defined]


def test_sept_ve_disable_is_required_by_default_and_false_accepts_both(tdx_vectors: Path, quote) -> None:  # type: ignore[no-untyped-def]
    clear = parse_quote((tdx_vectors / "v4_azure_trustee/quote.bin").read_bytes())  # Azure TDs report 0
    assert not clear.body.sept_ve_disable and quote.body.sept_ve_disable
    for td in (clear, quote):
        default = _policy(mrtd=[td.body.mr_td.hex()]).tdx  # type: ignore[attr-defined]
        assert default.sept_ve_disable is True
        refused = "policy.tdx.sept-ve-disable" in _failed(appraise_tdx(VerifiedTdx(td, UP_TO_DATE), default))
        assert refused == (td is clear)
        lax = _policy(mrtd=[td.body.mr_td.hex()], sept_ve_disable=False).tdx  # type: ignore[attr-defined]
        assert "policy.tdx.sept-ve-disable" not in _failed(appraise_tdx(VerifiedTdx(td, UP_TO_DATE), lax))


def test_missing_tcb_status_is_a_policy_failure(quote) -> None:  # type: ignore[no-untyped-def]
    checks = appraise_tdx(VerifiedTdx(quote, None), _policy(mrtd=[quote.body.mr_td.hex()]).tdx)  # type: ignore[attr-defined]
    assert "policy.tdx.tcb-status" in _failed(checks)


@pytest.mark.parametrize(("tdx", "message"), [
    ({"mrtd": ["ab"]}, r"policy\.tdx\.mrtd\[0\]: expected 96 hex"),
    ({"rtmr": {4: "00" * 48}}, r"policy\.tdx\.rtmr\.4: index must be an integer 0-3"),
    ({"rtmr": {1: []}}, r"policy\.tdx\.rtmr\.1: empty list"),
    ({"accept_tcb_status": ["Fine"]}, r"policy\.tdx\.accept_tcb_status: 'Fine' is not one of"),
    ({"accept_tcb_status": []}, r"accepts no TCB"),
    ({"reject_advisories": ["SA-1"]}, r"policy\.tdx\.reject_advisories\[0\]"),
    ({"mrdt": ["00" * 48]}, r"policy\.tdx\.mrdt"),
    ({"debug": "no"}, r"policy\.tdx\.debug: expected true or false"),
])
def test_policy_errors_name_the_key(tdx: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(PolicyError, match=message):
        _policy(**tdx)


def test_vtpm_pcr_policy_parses_and_names_bad_keys() -> None:
    p = parse_policy({"version": 1, "platforms": ["azure-snp-vtpm"], "vtpm": {"pcrs": {7: "aa" * 32}}})
    assert p.vtpm.pcrs == {7: [bytes.fromhex("aa" * 32)]}
    with pytest.raises(PolicyError, match=r"policy\.vtpm\.pcrs\.24"):
        parse_policy({"version": 1, "platforms": ["azure-snp-vtpm"], "vtpm": {"pcrs": {24: "aa" * 32}}})
