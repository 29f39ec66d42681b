"""The GPUs the gateway attests: collected into every certificate and fresh-evidence answer,
verified locally at start before their CC ready state is set (``gpus:`` in the config)."""

from __future__ import annotations

import logging
import secrets
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ratls.appraisal import Appraisal
from ratls.claims import Claims
from ratls.device_verify import verify_devices
from ratls.devices import DeviceCollector
from ratls.errors import ConfigError, RatlsError
from ratls.issue import collect_devices
from ratls.policy import Policy
from ratls.trust import Trust

from .config import GpuMode, GpuSection, OnGpuFailure
from .facts import Facts
from .metrics import MetricFamily

log = logging.getLogger("ratls.gateway.gpus")


def _local_policy(section: GpuSection) -> Policy:
    """What the gateway itself requires of its GPUs before it lets Triton use them."""
    from ratls.platforms.nvidia.policy import GpuPolicy
    from ratls.platforms.nvidia.section import NVIDIA_GPU_POLICY
    from ratls.platforms.nvidia.types import GpuArch
    gpu = GpuPolicy(required=True, count=section.count, architectures=tuple(GpuArch(a) for a in section.architectures),
                    require_rim_match=True, require_cc=True, allow_devtools=section.allow_devtools)
    return Policy(platforms=[], allow_simulated=section.mode is GpuMode.SIM, sections={NVIDIA_GPU_POLICY.key: gpu})


class GpuAttestation(Facts):
    def __init__(self, section: GpuSection, sim_state_dir: Path | None, *, nvml: Any = None) -> None:
        self.section = section
        self.failure: str | None = None
        self.ready_set = False
        self.attested = 0
        self._nvml = nvml
        self.collector: DeviceCollector | None = self._collector(sim_state_dir)

    @property
    def enabled(self) -> bool:
        return self.section.mode is not GpuMode.NONE

    def _collector(self, sim_state_dir: Path | None) -> DeviceCollector | None:
        s = self.section
        if s.mode is GpuMode.NONE:
            return None
        if s.mode is GpuMode.SIM:
            from ratls.platforms.nvidia.collector import SimGpuCollector
            from ratls.platforms.nvidia.sim import sim_gpu_dir
            return SimGpuCollector(sim_gpu_dir(sim_state_dir), s.count or 1)
        from ratls.platforms.nvidia.collect import GpuSettings, PynvmlApi
        from ratls.platforms.nvidia.collector import NvmlGpuCollector
        from ratls.platforms.nvidia.rim_store import RimStore
        from ratls.platforms.nvidia.types import GpuArch
        self._nvml = self._nvml or PynvmlApi()
        settings = GpuSettings(count=s.count, architectures=tuple(GpuArch(a) for a in s.architectures),
                               require_cc=True, allow_devtools=s.allow_devtools)
        store = RimStore(Path(s.rim_dir) if s.rim_dir else None, Path(s.rim_cache_dir), offline=not s.rim_online)
        return NvmlGpuCollector(self._nvml, settings, store)

    def check(self, now: datetime, trust: Trust) -> Appraisal:
        """Collect every GPU's evidence on a fresh nonce and verify it as a client would, with RIMs
        required (what the gateway itself demands before it lets Triton use the GPUs)."""
        claims = Claims(pubkey_sha256=bytes(32), iat=int(now.timestamp()), exp=int(now.timestamp()) + 300,
                        platform="local-gpu-check", instance=secrets.token_bytes(16))
        claims, collected = collect_devices(self.collector, claims)
        appraisal = Appraisal(platform=None, policy_applied=True)
        if self.section.mode is GpuMode.SIM:
            trust = self._sim_trust(trust)
        trust = self._with_references(trust, collected)
        verify_devices(claims, tuple(d.evidence for d in collected), trust, now, _local_policy(self.section),
                       appraisal)
        return appraisal

    def _with_references(self, trust: Trust, collected: list[Any]) -> Trust:
        """The RIMs the gateway will serve for these GPUs: verified here exactly as clients will."""
        from ratls import registry
        refs = dict(trust.device_references)
        for device in collected:
            kind = registry.lookup_device(device.type)
            for ref_id in kind.reference_ids(device.evidence) if kind is not None else []:
                body = self.collector.reference(ref_id) if self.collector is not None else None
                if body is not None:
                    refs[ref_id] = body
        return replace(trust, device_references=refs)

    def _sim_trust(self, trust: Trust) -> Trust:
        # the simulator's own roots, from its state directory (never from the evidence itself)
        gpu = self.collector.gpu  # type: ignore[union-attr]
        return replace(trust, simulated_roots=(*trust.simulated_roots, gpu.root_sha256, gpu.rim_root_sha256))

    def attest_at_start(self, now: datetime) -> None:
        """Before Triton starts: the GPUs are locked (their CC ready state cleared, whatever an
        earlier run left), verified locally, and only then released for work. Refuses to start,
        or stays unready with the GPUs locked, by config; anything unexpected fails the same way."""
        if not self.enabled:
            return
        try:
            self._set_ready(False)
            appraisal = self.check(now, Trust())
            failures = [f"{c.name}: {c.detail}" for c in appraisal.failures]
            self.attested = len(appraisal.devices)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the GPUs stay locked
            failures = [str(exc) if isinstance(exc, RatlsError) else f"{type(exc).__name__}: {exc}"]
        if failures:
            self._fail("GPU attestation failed: " + "; ".join(failures))
            return
        try:
            self._set_ready(True)
        except RatlsError as exc:
            self._fail(f"could not release the GPUs (CC ready state): {exc}")
            return
        self.ready_set = True
        log.info("GPU attestation passed for %d GPU(s); GPUs released for work", self.attested)

    def _set_ready(self, ready: bool) -> None:
        if self.section.mode is GpuMode.NVML:
            from ratls.platforms.nvidia.collect import set_ready
            set_ready(self._nvml, ready)

    def _fail(self, reason: str) -> None:
        self.failure = reason
        self.attested = 0
        log.error("%s", reason)
        if self.section.on_failure is OnGpuFailure.REFUSE:
            raise ConfigError(reason, hint="check the GPUs' CC mode, driver and firmware, and the RIMs in "
                                           "gpus.rim_dir (or set gpus.rim_online: true)")

    def metric_families(self) -> list[MetricFamily]:
        if not self.enabled:
            return []
        return [MetricFamily("ratls_gpus_attested", "gauge", "GPUs that passed local attestation at start").add(
            self.attested if self.failure is None else 0)]

    def status(self) -> dict[str, Any]:
        if not self.enabled:
            return {}
        return {"gpus": {"mode": self.section.mode, "attested": self.attested, "ready_state_set": self.ready_set,
                         "failure": self.failure}}

    def readiness_reasons(self) -> list[str]:
        return [self.failure] if self.failure else []
