"""Device collectors the gateway hands to certificate issuance (ratls.devices.DeviceCollector):
the simulated GPU, and real GPUs through NVML with their RIMs stapled."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...devices import CollectedDevice, DeviceEvidence
from ...errors import CollectionError, EvidenceError
from .device import MEDIA_TYPE, SIM_MEDIA_TYPE, Endorsement, NvidiaGpu, SimNvidiaGpu
from .types import GpuArch, RimKind


def label(index: int) -> str:
    return f"gpu{index}"


@dataclass
class SimGpuCollector:
    """*count* simulated Hopper GPUs sharing one simulated device (its state directory)."""

    state_dir: Path
    count: int = 1

    def collect(self, nonce_for: Callable[[str], bytes]) -> list[CollectedDevice]:
        from .sim import load_or_create
        gpu = load_or_create(self.state_dir)
        endorsements = {Endorsement.CHAIN: gpu.chain_pem(), Endorsement.DRIVER_RIM: gpu.rim(RimKind.DRIVER),
                        Endorsement.VBIOS_RIM: gpu.rim(RimKind.VBIOS), **gpu.endorsements()}
        state = {"cc": True, "devtools": False, "architecture": GpuArch.HOPPER.value, "mode": "single"}
        return [CollectedDevice(DeviceEvidence(label(i), SIM_MEDIA_TYPE, gpu.report(nonce_for(label(i))),
                                               endorsements), SimNvidiaGpu.name, state)
                for i in range(self.count)]


@dataclass
class NvmlGpuCollector:
    """Real GPUs through NVML (``collect.collect_gpus``), each report's RIMs looked up by the IDs
    it states in *rim_store* and stapled, so clients verify offline."""

    api: Any  # collect.NvmlApi
    settings: Any  # collect.GpuSettings
    rim_store: Any = None  # rim_store.RimStore

    def collect(self, nonce_for: Callable[[str], bytes]) -> list[CollectedDevice]:
        from .collect import collect_gpus
        gpus = collect_gpus(self.api, self.settings, lambda i: nonce_for(label(i)))
        return [CollectedDevice(DeviceEvidence(g.label, MEDIA_TYPE, g.report, self._endorsements(g)),
                                NvidiaGpu.name, _state(g)) for g in gpus]

    def _endorsements(self, gpu: Any) -> dict[str, bytes]:
        from .abi import parse_report, rim_ids
        out = {Endorsement.CHAIN: gpu.chain_pem}
        if self.rim_store is None:
            return out
        try:
            driver_id, vbios_id = rim_ids(parse_report(gpu.report), gpu.arch)
        except EvidenceError as exc:
            raise CollectionError(f"{gpu.label} answered with a report this gateway cannot read: {exc}") from None
        for kind, rim_id in ((RimKind.DRIVER, driver_id), (RimKind.VBIOS, vbios_id)):
            xml = self.rim_store.get(rim_id)
            if isinstance(xml, bytes):
                out[Endorsement.RIM_LABELS[kind]] = xml
        return out


def _state(gpu: Any) -> dict[str, Any]:
    return {"cc": bool(gpu.cc_on), "devtools": bool(gpu.devtools), "architecture": str(gpu.arch),
            "mode": str(gpu.multi_gpu_mode)}
