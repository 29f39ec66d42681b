"""``ratls doctor``: what would stop the gateway's GPU attestation (``gpus:``) on this machine."""

from __future__ import annotations

from typing import Any

from ratls.errors import RatlsError

from ..config import GatewayConfig, GpuMode
from .findings import Finding, fail, ok, warn


def gpu_findings(cfg: GatewayConfig, nvml: Any) -> list[Finding]:
    """*nvml*: a ``collect.NvmlApi`` (the real one on a CVM, a recording in tests)."""
    g = cfg.gpus
    if g.mode is GpuMode.NONE:
        return [ok("gpus", "no GPU attestation configured (gpus.mode: none)")]
    if g.mode is GpuMode.SIM:
        return [warn("gpus", f"SIMULATED GPUs ({g.count or 1}): certificates carry no GPU hardware evidence")]
    from ratls.platforms.nvidia.collect import nvml_session
    try:
        with nvml_session(nvml):
            settings, count = nvml.cc_settings(), nvml.device_count()
            archs = [nvml.architecture(i) for i in range(count)]
            driver = nvml.driver_version()
    except RatlsError as exc:
        return [fail("gpus.nvml", str(exc.message), exc.hint)]
    findings = [ok("gpus.nvml", f"NVML answers: driver {driver}, {count} GPU(s) {', '.join(archs) or '-'}")]
    findings.append(ok("gpus.cc", f"CC mode on ({settings.multi_gpu_mode})") if settings.confidential else
                    fail("gpus.cc", "the GPUs are not in confidential-computing mode",
                         "enable CC mode on the host (NVIDIA's gpu-admin-tools / nvidia-smi conf-compute), "
                         "then restart the CVM"))
    if settings.devtools and not g.allow_devtools:
        findings.append(fail("gpus.devtools", "dev-tools mode is on: debuggers can read GPU memory",
                             "switch the GPUs to CC production mode, or set gpus.allow_devtools: true (not for data)"))
    if g.count is not None and count != g.count:
        findings.append(fail("gpus.count", f"{count} GPU(s) found, gpus.count is {g.count}"))
    wrong = [a for a in archs if g.architectures and a not in g.architectures]
    if wrong:
        findings.append(fail("gpus.architecture", f"GPU architecture(s) {', '.join(wrong)} are not in "
                                                  f"gpus.architectures {g.architectures}"))
    if not g.rim_dir and not g.rim_online:
        findings.append(fail("gpus.rims", "no RIM source: the start check needs NVIDIA's RIMs for this driver "
                                          "and VBIOS", "set gpus.rim_dir to a directory of <RIM-ID>.xml files, "
                                                       "or gpus.rim_online: true"))
    return findings
