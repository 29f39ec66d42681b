"""TDX policy appraisal of an already verified quote. Pure: no I/O, no crypto."""

from __future__ import annotations

from ...appraisal import Check, allow_listed, failed, passed
from .policy import TdxPolicy
from .verify import CollateralResult, VerifiedTdx


def _tcb_checks(tcb: CollateralResult | None, policy: TdxPolicy) -> list[Check]:
    if tcb is None:
        # verify already failed the collateral check; say so here too so the policy view is complete
        return [failed("policy.tdx.tcb-status", "no verified TCB status (collateral missing or rejected)")]
    status = tcb.status
    checks: list[Check] = []
    if status in policy.accept_tcb_status:
        checks.append(passed("policy.tdx.tcb-status", f"TCB status {status} is accepted"))
    else:
        checks.append(failed("policy.tdx.tcb-status", f"TCB status {status} is not in the accepted "
                                                      f"{[s.value for s in policy.accept_tcb_status]}"))
    advisories = set(tcb.advisory_ids)
    hit = sorted(advisories & set(policy.reject_advisories))
    if policy.reject_advisories:
        checks.append((failed if hit else passed)(
            "policy.tdx.advisories", f"platform is affected by rejected advisories {hit}" if hit else
            f"none of the rejected advisories apply (platform has {sorted(advisories) or 'none'})"))
    if policy.min_tcb_eval_data_number is not None:
        have = tcb.tcb_eval_data_number
        ok = isinstance(have, int) and have >= policy.min_tcb_eval_data_number
        checks.append((passed if ok else failed)(
            "policy.tdx.tcb-eval-number", f"collateral TCB evaluation data number {have} "
                                          f"(minimum {policy.min_tcb_eval_data_number})"))
    return checks


def appraise_tdx(verified: VerifiedTdx, policy: TdxPolicy) -> list[Check]:
    quote = verified.quote
    checks: list[Check] = []
    body = quote.body
    if policy.mrtd is None:
        checks.append(failed("policy.tdx.mrtd", "the policy lists no accepted MRTD values (tdx.mrtd); refusing "
                                                "to accept any TD"))
    else:
        checks += allow_listed("policy.tdx.mrtd", body.mr_td, policy.mrtd, "MRTD")
    for index, allowed in sorted(policy.rtmr.items()):
        checks += allow_listed(f"policy.tdx.rtmr{index}", body.rtmr[index], allowed, f"RTMR{index}")
    checks += allow_listed("policy.tdx.mrconfigid", body.mr_config_id, policy.mrconfigid, "MRCONFIGID")
    checks += allow_listed("policy.tdx.mrowner", body.mr_owner, policy.mrowner, "MROWNER")
    checks += allow_listed("policy.tdx.mrownerconfig", body.mr_owner_config, policy.mrownerconfig, "MROWNERCONFIG")
    checks += allow_listed("policy.tdx.mrseam", body.mr_seam, policy.mrseam, "MRSEAM")
    if body.debug and not policy.debug:
        checks.append(failed("policy.tdx.debug", f"TD is debuggable (TDATTRIBUTES {body.td_attributes.hex()}): the "
                                                 "host can read its memory; the policy forbids debug TDs"))
    else:
        checks.append(passed("policy.tdx.debug", "TD debug bit is " + ("set (allowed)" if body.debug else "clear")))
    if policy.sept_ve_disable and not body.sept_ve_disable:
        checks.append(failed("policy.tdx.sept-ve-disable", f"SEPT_VE_DISABLE is 0 (TDATTRIBUTES "
                                                           f"{body.td_attributes.hex()}): the host can make the TD "
                                                           "take #VE on its private pages; the policy requires it set "
                                                           "(the default; tdx.sept_ve_disable: false accepts 0)"))
    else:
        checks.append(passed("policy.tdx.sept-ve-disable", f"SEPT_VE_DISABLE is {int(body.sept_ve_disable)}" + (
            " (required)" if policy.sept_ve_disable else " (the policy accepts either value)")))
    if policy.report_data is not None:
        ok = body.report_data == policy.report_data
        checks.append((passed if ok else failed)("policy.tdx.report-data", "REPORTDATA " + (
            "matches" if ok else "differs from") + " the expected value"))
    checks += _tcb_checks(verified.collateral, policy)
    return checks
