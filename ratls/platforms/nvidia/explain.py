"""How the ``nvidia-gpu`` policy section explains itself and what ``policy init`` observes."""

from __future__ import annotations

import re
from typing import Any

from ...appraisal import Appraisal
from ...policy import Policy
from ...policy_rules import CheckSpec, Rule, one_of
from .policy import GpuPolicy

_PER_GPU = re.compile(r"policy\.nvidia-gpu\.(gpu\d+)\.(driver|vbios|architecture)")
_KEYS = {"driver": ("driver_versions", "driver"), "vbios": ("vbios_versions", "vbios"),
         "architecture": ("architectures", "architecture")}


def gpu_check_spec(check: str) -> CheckSpec | None:
    """Where a failed GPU version or architecture check's two sides live (``ratls policy diff``)."""
    match = _PER_GPU.fullmatch(check)
    if match is None:
        return None
    label, what = match.groups()
    key, field = _KEYS[what]

    def expected(policy: Policy) -> list[str]:
        from .section import NVIDIA_GPU_POLICY
        return [str(v) for v in getattr(NVIDIA_GPU_POLICY.of(policy), key)]

    return CheckSpec(f"{label} {what}", ("nvidia-gpu", key), expected,
                     lambda a: a.devices.get(label, {}).get(field), suggest=True)


def explain_gpu(gpu: GpuPolicy) -> list[Rule]:
    rules = [Rule("nvidia-gpu.required", "GPU evidence is required" if gpu.required else
                  "GPU evidence is optional: a certificate without GPUs is accepted", pinned=gpu.required,
                  value=gpu.required, warning=not gpu.required)]
    rules.append(Rule("nvidia-gpu.count", f"exactly {gpu.count} GPU(s)", pinned=True, value=gpu.count)
                 if gpu.count else Rule("nvidia-gpu.count", "any number of GPUs", pinned=False))
    rules.append(Rule("nvidia-gpu.architectures", f"architecture {one_of(list(gpu.architectures))}", pinned=True,
                      value=list(gpu.architectures)) if gpu.architectures else
                 Rule("nvidia-gpu.architectures", "any GPU architecture", pinned=False))
    for key, what, allowed, minimum in (("driver", "driver", gpu.driver_versions, gpu.min_driver_version),
                                        ("vbios", "VBIOS", gpu.vbios_versions, gpu.min_vbios_version)):
        if allowed:
            rules.append(Rule(f"nvidia-gpu.{key}_versions", f"{what} {one_of(list(allowed))}", pinned=True,
                              value=list(allowed)))
        if minimum:
            rules.append(Rule(f"nvidia-gpu.min_{key}_version", f"{what} at least {minimum}", pinned=True,
                              value=minimum))
        if not allowed and not minimum:
            rules.append(Rule(f"nvidia-gpu.{key}_versions", f"any {what} version", pinned=False))
    rules.append(Rule("nvidia-gpu.require_rim_match", "measurements must match NVIDIA's signed reference values",
                      pinned=True, value=True) if gpu.require_rim_match else
                 Rule("nvidia-gpu.require_rim_match", "GPUs whose RIMs are unavailable are ACCEPTED unmeasured",
                      pinned=False, value=False, warning=True))
    rules.append(Rule("nvidia-gpu.require_cc", "CC mode on (as the attested gateway read it)", pinned=True)
                 if gpu.require_cc else Rule("nvidia-gpu.require_cc", "GPUs outside CC mode are ACCEPTED: tensors "
                                             "cross PCIe in the clear", pinned=False, warning=True))
    if gpu.allow_devtools:
        rules.append(Rule("nvidia-gpu.allow_devtools", "dev-tools mode is ACCEPTED", pinned=False, warning=True))
    rules.append(Rule("nvidia-gpu.require_ocsp", "OCSP answers for the device chain required" if gpu.require_ocsp
                      else "revocation is checked only when OCSP answers are present", pinned=gpu.require_ocsp))
    return rules


def observed_gpu(appraisal: Appraisal) -> dict[str, Any]:
    """A starting ``nvidia-gpu`` section from the GPUs a server presented (``ratls policy init``)."""
    gpus = [d for d in appraisal.devices.values() if d.get("family") == "nvidia-gpu"]
    section: dict[str, Any] = {"required": True, "count": len(gpus)}
    for key, field in (("architectures", "architecture"), ("driver_versions", "driver"),
                       ("vbios_versions", "vbios")):
        values = sorted({str(g[field]) for g in gpus if g.get(field)})
        if values:
            section[key] = values
    section["require_rim_match"] = True
    return section
