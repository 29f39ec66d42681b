"""Appraise verified GPUs against the ``nvidia-gpu:`` policy section. Reads only VerifiedGpu."""

from __future__ import annotations

from ...appraisal import Check, failed, passed
from ...policy import Policy
from .policy import GpuPolicy, version_key
from .types import OcspStatus, VerifiedGpu

P = "policy.nvidia-gpu"


def appraise_gpus(gpus: list[VerifiedGpu], section: GpuPolicy | None, policy: Policy) -> list[Check]:
    """*section* None: the policy has no ``nvidia-gpu:`` section, so GPUs that are present were
    verified for authenticity and are only checked for simulation here."""
    checks: list[Check] = [_simulation(g, policy) for g in gpus if g.simulated]
    if section is None:
        return checks
    if section.required and not gpus:
        return [*checks, failed(f"{P}.required", "the policy requires GPU evidence and the certificate carries "
                                                 "none: the model may run on a GPU nobody attested")]
    if section.count is not None:
        ok = len(gpus) == section.count
        checks.append((passed if ok else failed)(f"{P}.count", f"{len(gpus)} GPU(s) attested"
                                                 + ("" if ok else f", the policy expects {section.count}")))
    checks.extend(_modes(gpus))
    checks.extend(_distinct(gpus))
    for gpu in gpus:
        checks.extend(_appraise_one(gpu, section))
    return checks


def _distinct(gpus: list[VerifiedGpu]) -> list[Check]:
    """A count means that many GPUs: one GPU's evidence twice is refused (by its certificate's
    UEID; the simulated GPUs share one simulated device, so they are not counted apart)."""
    real = [g for g in gpus if not g.simulated and g.ueid is not None]
    seen: dict[str, str] = {}
    for gpu in real:
        if gpu.ueid in seen:
            return [failed(f"{P}.distinct", f"{gpu.label} is the same GPU as {seen[gpu.ueid]} (UEID {gpu.ueid})")]
        seen[gpu.ueid] = gpu.label  # type: ignore[index]
    return [passed(f"{P}.distinct", f"{len(real)} distinct GPUs")] if len(real) > 1 else []


# the GPU-signed FEATURE_FLAG (opaque data version >= 1) and NVML's multi-GPU mode, in one vocabulary
_FLAG_MODES = {0: "single", 1: "multi", 2: "protected-pcie"}


def _modes(gpus: list[VerifiedGpu]) -> list[Check]:
    """The GPUs run in one mode (NVIDIA refuses a set mixing single- and multi-GPU modes), and the
    mode each GPU signed agrees with the mode the gateway read through NVML."""
    signed = {g.label: _FLAG_MODES.get(g.report.opaque.feature_flag, f"flag {g.report.opaque.feature_flag}")
              for g in gpus if g.report is not None and g.report.opaque.feature_flag is not None}
    checks: list[Check] = []
    for gpu in gpus:
        said, flag = gpu.state.get("mode"), signed.get(gpu.label)
        if flag is not None and said is not None and said != flag:
            checks.append(failed(f"{P}.{gpu.label}.mode", f"the GPU signed mode {flag}, the gateway reported {said}"))
    if len(set(signed.values())) > 1:
        checks.append(failed(f"{P}.mode", "the GPUs run in different modes: " + ", ".join(
            f"{label} {mode}" for label, mode in sorted(signed.items()))))
    elif len(gpus) > 1 and signed:
        checks.append(passed(f"{P}.mode", f"every GPU runs in {next(iter(signed.values()))} mode"))
    return checks


def _simulation(gpu: VerifiedGpu, policy: Policy) -> Check:
    if policy.allow_simulated:
        return passed(f"{P}.{gpu.label}.simulated", "SIMULATED GPU accepted (allow_simulated: true)")
    return failed(f"{P}.{gpu.label}.simulated", "GPU evidence is SIMULATED and the policy does not allow simulation")


def _appraise_one(gpu: VerifiedGpu, section: GpuPolicy) -> list[Check]:
    name = f"{P}.{gpu.label}"
    checks: list[Check] = []
    if section.architectures:
        ok = gpu.arch in section.architectures
        checks.append((passed if ok else failed)(f"{name}.architecture", f"architecture {gpu.arch}" + (
            "" if ok else f" is not one of {', '.join(section.architectures)}")))
    checks += _version(f"{name}.driver", "driver", gpu.driver_version, section.driver_versions,
                       section.min_driver_version)
    checks += _version(f"{name}.vbios", "VBIOS", gpu.vbios_version, section.vbios_versions,
                       section.min_vbios_version)
    if section.require_rim_match:
        checks.append(_rim_match(gpu, f"{name}.rim-match"))
    checks += _state(gpu, section, name)
    checks += _ocsp(gpu, section, name)
    return checks


def _version(name: str, what: str, have: str | None, allowed: tuple[str, ...], minimum: str | None) -> list[Check]:
    checks: list[Check] = []
    if have is None:
        if allowed or minimum:
            checks.append(failed(name, f"the GPU report states no {what} version"))
        return checks
    if allowed:
        ok = have.lower() in allowed
        checks.append((passed if ok else failed)(name, f"{what} {have}" + (
            " is allowed" if ok else f" is not one of {', '.join(allowed)}")))
    if minimum:
        try:
            ok = version_key(have.lower()) >= version_key(minimum)
        except ValueError:
            ok = False
        checks.append((passed if ok else failed)(f"{name}-minimum", f"{what} {have}" + (
            f" is at least {minimum}" if ok else f" is older than the minimum {minimum}")))
    return checks


def _rim_match(gpu: VerifiedGpu, name: str) -> Check:
    result = gpu.measurements
    if result is None:
        return failed(name, "no RIMs were available, so the GPU's firmware and driver measurements were not "
                            "compared with NVIDIA's reference values (give --rim-dir with NVIDIA's RIMs named by "
                            "RIM ID, or --online; the server offers them at /.well-known/ratls/rims/<id>)")
    rims_ok = all(r is not None and r.ok for r in (gpu.driver_rim, gpu.vbios_rim))
    if result.ok and rims_ok:
        return passed(name, f"all {result.compared} active reference measurements match")
    return failed(name, "the measurements do not match valid NVIDIA reference values")


def _state(gpu: VerifiedGpu, section: GpuPolicy, name: str) -> list[Check]:
    """The driver-side state the attested gateway read through NVML (claims, not GPU-signed)."""
    checks: list[Check] = []
    if section.require_cc:
        ok = gpu.state.get("cc") is True
        checks.append((passed if ok else failed)(f"{name}.cc-mode", "the gateway read CC mode on" if ok else
                                                 "the gateway did not report confidential-computing mode on"))
    if not section.allow_devtools:
        ok = gpu.state.get("devtools") is False
        checks.append((passed if ok else failed)(f"{name}.devtools", "dev-tools mode off" if ok else
                                                 "dev-tools mode is on or not reported (GPU memory is readable "
                                                 "by debugging tools)"))
    return checks


def _ocsp(gpu: VerifiedGpu, section: GpuPolicy, name: str) -> list[Check]:
    statuses = list(gpu.ocsp.values())
    checked = [s for s in statuses if s is not OcspStatus.NOT_CHECKED]
    checks: list[Check] = []
    if section.require_ocsp:
        ok = bool(checked) and len(checked) == len(statuses)
        checks.append((passed if ok else failed)(f"{name}.ocsp", f"OCSP answered for {len(checked)} certificate(s)"
                                                 if ok else "the policy requires OCSP answers for the device chain "
                                                            "and not all were available"))
    unknown = [s for s in checked if s is OcspStatus.UNKNOWN]
    if unknown and not section.allow_unknown_ocsp:
        checks.append(failed(f"{name}.ocsp-unknown", f"NVIDIA's OCSP did not know {len(unknown)} device "
                                                     "certificate(s) (allow_unknown_ocsp: false)"))
    return checks
