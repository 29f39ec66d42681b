"""TCB status and TD attributes are separate questions: the collateral check gives Intel's TCB
verdict (dcap-qvl's) whatever the TD's DEBUG and SEPT_VE_DISABLE bits are, and the policy
decides those bits (SEPT_VE_DISABLE required unless the policy says sept_ve_disable: false)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import dcap_qvl
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

import ratls.platforms.sim.tdx_chain as sim_tdx
from ratls.evidence import Evidence
from ratls.pipeline import verify_evidence
from ratls.platforms.tdx import abi
from ratls.platforms.tdx.abi import parse_quote
from ratls.platforms.tdx.platform import COLLATERAL_LABEL, MEDIA_TYPE
from ratls.platforms.tdx.tcb_verdict import verdict_without_attribute_rule
from ratls.platforms.tdx.verify import TdxTrust, load_pck_chain, shipped_root, verify_tdx
from ratls.policy import parse_policy

from .conftest import DCAP_V4_NOW, DCAP_V5_NOW, GO_V4_NOW

NOW = datetime.now(UTC)
SEPT = abi.TD_ATTR_SEPT_VE_DISABLE


def _quote(chain, attributes: int) -> abi.TdxQuote:  # type: ignore[no-untyped-def]
    return parse_quote(chain.sign_quote(chain.body(bytes(64), td_attributes=attributes.to_bytes(8, "little"))))


def _verify(chain, attributes: int, collateral: bytes | None = None):  # type: ignore[no-untyped-def]
    return verify_tdx(_quote(chain, attributes), collateral or chain.collateral,
                      TdxTrust(root=chain.root, simulated=True), NOW)


def _failed(checks: list) -> dict[str, str]:  # type: ignore[type-arg]
    return {c.name: c.detail for c in checks if not c.ok}


# ---- verify: Intel's TCB verdict only ----

@pytest.mark.parametrize("attributes", [0, abi.TD_ATTR_DEBUG, abi.TD_ATTR_DEBUG | SEPT, SEPT])
def test_collateral_check_gives_the_tcb_verdict_whatever_debug_and_sept_ve_disable(sim_tdx_chain,  # type: ignore[no-untyped-def]
                                                                                    attributes: int) -> None:
    verified = _verify(sim_tdx_chain, attributes)
    assert verified.authentic, _failed(verified.checks)
    assert verified.tcb["status"] == "UpToDate" and verified.tcb["advisory_ids"] == []
    detail = next(c.detail for c in verified.checks if c.name == "tdx.collateral")
    assert ("left to the policy" in detail) == (attributes != SEPT)


def _chain_with_tcb_level(monkeypatch: pytest.MonkeyPatch, **level: object):  # type: ignore[no-untyped-def]
    plain = sim_tdx._tcb_info

    def tcb_info(now, until):  # type: ignore[no-untyped-def]
        doc = plain(now, until)
        doc["tcbLevels"][0].update(level)  # type: ignore[index]
        return doc

    monkeypatch.setattr(sim_tdx, "_tcb_info", tcb_info)
    return sim_tdx.generate_tdx_chain()


def test_the_verdict_without_the_rule_is_dcap_qvls_own(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = _chain_with_tcb_level(monkeypatch, tcbStatus="OutOfDate", advisoryIDs=["INTEL-SA-00837"])
    with_bit, without = _verify(chain, SEPT), _verify(chain, 0)
    assert with_bit.tcb["status"] == without.tcb["status"] == "OutOfDate"
    assert with_bit.tcb["advisory_ids"] == without.tcb["advisory_ids"] == ["INTEL-SA-00837"]
    assert with_bit.tcb["ppid"] == without.tcb["ppid"]


@pytest.mark.parametrize(("level", "reason"), [
    ({"tcbStatus": "Revoked"}, "TCB status is invalid: Revoked"),
    ({"tcb": {"sgxtcbcomponents": [{"svn": 99}] * 16, "pcesvn": 13,
              "tdxtcbcomponents": [{"svn": 0}] * 16}}, "No matching TCB level found"),
])
def test_a_bad_tcb_is_refused_whatever_the_attributes(monkeypatch: pytest.MonkeyPatch, level: dict,  # type: ignore[type-arg]
                                                     reason: str) -> None:
    chain = _chain_with_tcb_level(monkeypatch, **level)
    for attributes in (SEPT, 0, abi.TD_ATTR_DEBUG):
        assert reason in _failed(_verify(chain, attributes).checks)["tdx.collateral"]


@pytest.mark.parametrize("field", ["tcb_info_signature", "qe_identity_signature"])
def test_collateral_signatures_still_count_with_the_bit_clear(sim_tdx_chain, field: str) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(sim_tdx_chain.collateral)
    sig = bytearray(bytes.fromhex(doc[field]))
    sig[7] ^= 1
    doc[field] = sig.hex()
    detail = _failed(_verify(sim_tdx_chain, 0, json.dumps(doc).encode()).checks)["tdx.collateral"]
    assert "Signature is invalid" in detail


@pytest.mark.parametrize(("attributes", "reason"), [(1 << 29, "TD migration is enabled"),
                                                    (1 << 32, "Reserved bits in TD attributes are set")])
def test_dcap_qvls_other_attribute_rules_still_apply(sim_tdx_chain, attributes: int, reason: str) -> None:  # type: ignore[no-untyped-def]
    for sept in (0, SEPT):
        assert reason in _failed(_verify(sim_tdx_chain, attributes | sept).checks)["tdx.collateral"]


def test_an_altered_quote_with_the_bit_clear_is_refused(sim_tdx_chain) -> None:  # type: ignore[no-untyped-def]
    raw = bytearray(_quote(sim_tdx_chain, 0).raw)
    raw[abi.HEADER_SIZE + 200] ^= 1  # inside MRTD
    verified = verify_tdx(parse_quote(bytes(raw)), sim_tdx_chain.collateral,
                          TdxTrust(root=sim_tdx_chain.root, simulated=True), NOW)
    assert {"tdx.quote-signature", "tdx.collateral"} <= set(_failed(verified.checks))


@pytest.mark.parametrize(("quote", "collateral", "now"), [
    ("v4_dcap-qvl/quote.bin", "v4_dcap-qvl/collateral.json", DCAP_V4_NOW),
    ("v5_go-tdx-guest/quote.bin", "v5_outdated_dcap-qvl/collateral.json", DCAP_V5_NOW),  # TDX 1.5 body
    ("v5_outdated_dcap-qvl/quote.bin", "v5_outdated_dcap-qvl/collateral.json", DCAP_V5_NOW),
    ("v4_go-tdx-guest/quote.bin", "v4_go-tdx-guest/collateral_assembled.json", GO_V4_NOW),
])
def test_the_copy_gets_dcap_qvls_verdict_on_the_real_vectors(tdx_vectors: Path, quote: str, collateral: str,
                                                             now: datetime) -> None:
    # Real Intel collateral and quotes: asked about the re-signed copy, dcap-qvl answers exactly
    # what it answers about the original (same status, same QE and platform status, or the same
    # refusal).
    raw, text = (tdx_vectors / quote).read_bytes(), (tdx_vectors / collateral).read_text()

    def answer(fn):  # type: ignore[no-untyped-def]
        try:
            doc = json.loads(fn().to_json())
            return {k: doc[k] for k in ("status", "advisory_ids", "qe_status", "platform_status")}
        except ValueError as exc:
            return str(exc)

    real = answer(lambda: dcap_qvl.verify_with_root_ca(raw, dcap_qvl.QuoteCollateralV3.from_json(text),
                                                       shipped_root().public_bytes(Encoding.DER),
                                                       int(now.timestamp())))
    parsed = parse_quote(raw)
    copy = answer(lambda: verdict_without_attribute_rule(dcap_qvl, parsed, load_pck_chain(parsed.pck_chain_pem),
                                                         json.loads(text), now))
    assert copy == real


def test_real_quote_with_the_bit_clear_keeps_its_tcb_refusal(tdx_vectors: Path) -> None:
    # go-tdx-guest's SPR quote has SEPT_VE_DISABLE clear; its TEE_TCB_SVN is below every level
    quote = parse_quote((tdx_vectors / "v4_go-tdx-guest/quote.bin").read_bytes())
    assert not quote.body.sept_ve_disable
    ev = Evidence("tdx", MEDIA_TYPE, quote.raw,
                  {COLLATERAL_LABEL: (tdx_vectors / "v4_go-tdx-guest/collateral_assembled.json").read_bytes()})
    a = verify_evidence(ev, policy=None, now=GO_V4_NOW)
    assert _failed(a.checks) == {"tdx.collateral": "dcap-qvl rejected the quote with this collateral: No matching "
                                                   "TCB level found"}


# ---- appraise: the policy decides the bit ----

def _sim_policy(chain, **tdx: object):  # type: ignore[no-untyped-def]
    return parse_policy({"version": 1, "platforms": [], "allow_simulated": True,
                         "simulated": {"root_sha256": chain.root_sha256},
                         "tdx": {"mrtd": [chain.mrtd.hex()], **tdx}})


def _end_to_end(chain, attributes: int, policy):  # type: ignore[no-untyped-def]
    ev = Evidence("sim-tdx", MEDIA_TYPE, _quote(chain, attributes).raw, {COLLATERAL_LABEL: chain.collateral})
    return verify_evidence(ev, policy=policy, now=NOW)


def test_default_policy_requires_sept_ve_disable(sim_tdx_chain) -> None:  # type: ignore[no-untyped-def]
    policy = _sim_policy(sim_tdx_chain)
    assert policy.tdx.sept_ve_disable is True
    a = _end_to_end(sim_tdx_chain, 0, policy)
    assert set(_failed(a.checks)) == {"policy.tdx.sept-ve-disable"}, _failed(a.checks)
    assert "SEPT_VE_DISABLE is 0" in _failed(a.checks)["policy.tdx.sept-ve-disable"]
    assert a.tcb["status"] == "UpToDate"  # the TCB verdict is there; only the policy refuses
    assert _end_to_end(sim_tdx_chain, SEPT, policy).ok


def test_sept_ve_disable_false_accepts_both(sim_tdx_chain) -> None:  # type: ignore[no-untyped-def]
    policy = _sim_policy(sim_tdx_chain, sept_ve_disable=False)
    for attributes in (0, SEPT):
        a = _end_to_end(sim_tdx_chain, attributes, policy)
        assert a.ok, _failed(a.checks)
        assert "accepts either value" in next(c.detail for c in a.checks if c.name == "policy.tdx.sept-ve-disable")


def test_debug_td_passes_verify_and_is_the_policys_to_refuse(sim_tdx_chain) -> None:  # type: ignore[no-untyped-def]
    debug = abi.TD_ATTR_DEBUG | SEPT
    assert set(_failed(_end_to_end(sim_tdx_chain, debug, _sim_policy(sim_tdx_chain)).checks)) == {"policy.tdx.debug"}
    assert _end_to_end(sim_tdx_chain, debug, _sim_policy(sim_tdx_chain, debug=True)).ok


def test_a_quote_under_another_root_with_the_bit_clear_is_refused(sim_tdx_chain) -> None:  # type: ignore[no-untyped-def]
    """The re-signed copy is only ever asked for a TCB verdict after dcap-qvl authenticated the
    real quote to the trusted root: a quote whose PCK chain ends elsewhere (here: verified
    against Intel's root instead of the simulator's) must fail the collateral check too, with
    the bit clear as with it set, so a dcap-qvl that reordered its checks fails this test."""
    for attributes in (0, SEPT):
        verified = verify_tdx(_quote(sim_tdx_chain, attributes), sim_tdx_chain.collateral,
                              TdxTrust(root=shipped_root(), simulated=True), NOW)
        failed = _failed(verified.checks)
        assert "tdx.collateral" in failed and "tdx.pck-chain" in failed and verified.parsed.collateral is None
