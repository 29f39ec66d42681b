"""How the ``vtpm`` policy section explains itself and where its checks' values live."""

from __future__ import annotations

from ...policy_rules import CheckSpec, Rule, allow_list, hexes, measurement
from .policy import VtpmPolicy


def explain_vtpm(vtpm: VtpmPolicy) -> list[Rule]:
    if not vtpm.pcrs:
        return [Rule("vtpm.pcrs", "no PCR pinned: any boot chain and OS under the paravisor", pinned=False)]
    return [allow_list(f"vtpm.pcrs.{i}", f"PCR{i}", values, "") for i, values in sorted(vtpm.pcrs.items())]




def vtpm_check_spec(check: str) -> CheckSpec | None:
    from .section import VTPM_POLICY
    head, _, tail = check.rpartition(".")
    index = tail.removeprefix("pcr")
    if head == "policy.vtpm" and tail.startswith("pcr") and index.isdigit():
        i = int(index)
        return CheckSpec(f"PCR{i}", ("vtpm", "pcrs", i), lambda p: hexes(VTPM_POLICY.of(p).pcrs.get(i)),
                         measurement(f"pcr{i}"), suggest=True)
    return None
