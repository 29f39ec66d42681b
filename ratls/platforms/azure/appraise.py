"""Azure vTPM appraisal: the hardware section of the policy (sev-snp or tdx) plus PCR pins."""

from __future__ import annotations

from ...appraisal import Check, failed, passed
from .policy import VtpmPolicy


def appraise_pcrs(pcrs: dict[int, bytes], policy: VtpmPolicy) -> list[Check]:
    checks: list[Check] = []
    for index, allowed in sorted(policy.pcrs.items()):
        name = f"policy.vtpm.pcr{index}"
        value = pcrs.get(index)
        if value is None:
            checks.append(failed(name, f"PCR{index} is not covered by the signed TPM quote"))
        elif value in allowed:
            checks.append(passed(name, f"PCR{index} {value.hex()} is allowed"))
        else:
            checks.append(failed(name, f"PCR{index} {value.hex()} is not in the policy's {len(allowed)} allowed "
                                       "value(s)"))
    return checks
