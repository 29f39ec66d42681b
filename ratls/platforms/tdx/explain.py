"""How the ``tdx`` policy section explains itself and where its checks' values live."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...appraisal import Appraisal
from ...policy import Policy
from ...policy_rules import CheckSpec, Rule, allow_list, evidence_field, hex_or_none, hexes, measurement, one_of
from .policy import TdxPolicy


def explain_tdx(tdx: TdxPolicy) -> list[Rule]:
    rules = [Rule("tdx.mrtd", "no MRTD listed: every TD is refused (fail closed)", pinned=True, value=[])
             if tdx.mrtd is None else allow_list("tdx.mrtd", "MRTD", tdx.mrtd, "")]
    for i in range(4):
        runtime = " (RTMR3 is usually extended at runtime)" if i == 3 else ""
        rules.append(allow_list(f"tdx.rtmr.{i}", f"RTMR{i}", tdx.rtmr.get(i), f"RTMR{i} is not pinned{runtime}"))
    for key, label in (("mrconfigid", "MRCONFIGID"), ("mrowner", "MROWNER"), ("mrownerconfig", "MROWNERCONFIG")):
        rules.append(allow_list(f"tdx.{key}", label, getattr(tdx, key), f"{label} is not pinned: any value"))
    rules.append(allow_list("tdx.mrseam", "MRSEAM", tdx.mrseam,
                             "MRSEAM not pinned: any TDX module whose TCB status is accepted"))
    rules.append(Rule("tdx.debug", "debuggable TDs are ACCEPTED: the host can read TD memory", pinned=True,
                      value=True, warning=True) if tdx.debug else
                 Rule("tdx.debug", "debuggable TDs are refused", pinned=True, value=False))
    rules.append(Rule("tdx.sept_ve_disable", "SEPT_VE_DISABLE must be set (the default)", pinned=True, value=True)
                 if tdx.sept_ve_disable else
                 Rule("tdx.sept_ve_disable", "SEPT_VE_DISABLE is not required: TDs the host can make take #VE on "
                      "their private pages are accepted", pinned=False, value=False, warning=True))
    stale = [s for s in tdx.accept_tcb_status if s.startswith("OutOfDate")]
    rules.append(Rule("tdx.accept_tcb_status", f"TCB status must be {one_of(tdx.accept_tcb_status)}"
                      + (": OUT-OF-DATE platforms (known vulnerabilities) are accepted" if stale else ""),
                      pinned=True, value=tdx.accept_tcb_status, warning=bool(stale)))
    rules.append(Rule("tdx.reject_advisories", "no advisory is rejected beyond the TCB status", pinned=False)
                 if not tdx.reject_advisories else
                 Rule("tdx.reject_advisories", "platforms affected by " + ", ".join(tdx.reject_advisories)
                      + " are refused", pinned=True, value=tdx.reject_advisories))
    rules.append(Rule("tdx.min_tcb_eval_data_number", "no minimum TCB evaluation data number: collateral of any "
                      "age is accepted", pinned=False) if tdx.min_tcb_eval_data_number is None else
                 Rule("tdx.min_tcb_eval_data_number", f"TCB evaluation data number at least "
                      f"{tdx.min_tcb_eval_data_number}", pinned=True, value=tdx.min_tcb_eval_data_number))
    if tdx.report_data is not None:
        rules.append(Rule("tdx.report_data", f"REPORTDATA must be {tdx.report_data.hex()} (raw evidence only)",
                          pinned=True, value=tdx.report_data.hex()))
    return rules




def _section() -> Any:
    from .section import TDX_POLICY  # the section names this module's explainers: imported when first used
    return TDX_POLICY


def own(read: Callable[[Any], Any]) -> Callable[[Policy], Any]:
    """A reader of this section's value in a policy."""
    return lambda p: read(_section().of(p))


_SPECS: dict[str, CheckSpec] = {
    "policy.tdx.mrtd": CheckSpec("MRTD", ("tdx", "mrtd"), own(lambda s: hexes(s.mrtd)), measurement("mrtd"),
                                 suggest=True),
    "policy.tdx.mrconfigid": CheckSpec("MRCONFIGID", ("tdx", "mrconfigid"), own(lambda s: hexes(s.mrconfigid)),
                               measurement("mrconfigid"), suggest=True),
    "policy.tdx.mrowner": CheckSpec("MROWNER", ("tdx", "mrowner"), own(lambda s: hexes(s.mrowner)),
                                    measurement("mrowner"),
                            suggest=True),
    "policy.tdx.mrownerconfig": CheckSpec("MROWNERCONFIG", ("tdx", "mrownerconfig"),
                                  own(lambda s: hexes(s.mrownerconfig)), measurement("mrownerconfig"), suggest=True),
    "policy.tdx.mrseam": CheckSpec("MRSEAM (TDX module)", ("tdx", "mrseam"), own(lambda s: hexes(s.mrseam)),
                           measurement("mrseam"), suggest=True),
    "policy.tdx.debug": CheckSpec("TD debug attribute", ("tdx", "debug"), own(lambda s: s.debug),
                                  evidence_field("debug")),
    "policy.tdx.sept-ve-disable": CheckSpec("SEPT_VE_DISABLE", ("tdx", "sept_ve_disable"),
                                    own(lambda s: s.sept_ve_disable), evidence_field("sept_ve_disable")),
    "policy.tdx.report-data": CheckSpec("REPORTDATA", ("tdx", "report_data"), own(lambda s: hex_or_none(s.report_data)),
                                evidence_field("report_data")),
    "policy.tdx.tcb-status": CheckSpec("TDX TCB status", ("tdx", "accept_tcb_status"),
                               own(lambda s: s.accept_tcb_status), lambda a: a.tcb.get("status")),
    "policy.tdx.advisories": CheckSpec("Intel security advisories", ("tdx", "reject_advisories"),
                               own(lambda s: s.reject_advisories), lambda a: a.tcb.get("advisory_ids")),
    "policy.tdx.tcb-eval-number": CheckSpec("TCB evaluation data number", ("tdx", "min_tcb_eval_data_number"),
                                    own(lambda s: s.min_tcb_eval_data_number),
                                    lambda a: a.tcb.get("tcb_eval_data_number")),
}


def tdx_check_spec(check: str) -> CheckSpec | None:
    if check in _SPECS:
        return _SPECS[check]
    head, _, tail = check.rpartition(".")
    index = tail.removeprefix("rtmr")
    if head == "policy.tdx" and tail.startswith("rtmr") and index.isdigit():
        i = int(index)
        return CheckSpec(f"RTMR{i}", ("tdx", "rtmr", i), lambda p: hexes(_section().of(p).rtmr.get(i)),
                         measurement(f"rtmr{i}"), suggest=True)
    return None


def observed_tdx(appraisal: Appraisal) -> dict[str, Any]:
    """A starting ``tdx`` section from what a server presented (``ratls policy init``)."""
    m = appraisal.measurements
    # RTMR3 is extended at runtime by the guest (e.g. per container); it is left out on purpose.
    return {
        "mrtd": [m["mrtd"]],
        "rtmr": {i: m[f"rtmr{i}"] for i in range(3)},
        "mrconfigid": [m["mrconfigid"]],
        "debug": False,  # never copied: a debuggable TD is refused, not pinned
        # copied: Azure TDX CVMs report 0 (policy init says so when it writes false)
        "sept_ve_disable": bool(appraisal.evidence.get("sept_ve_disable", True)),
        "accept_tcb_status": [appraisal.tcb.get("status", "UpToDate")],
    }
