"""Device collectors the gateway hands to certificate issuance (ratls.devices.DeviceCollector):
the simulated GPU, and real GPUs through NVML.

What goes into a certificate per GPU is its report and its device chain without the root every
verifier pins (about 6.7 KiB); the RIMs the report names (about 20 KiB each, the same for every
GPU with that driver and VBIOS) are served by ID instead (``/.well-known/ratls/rims/<id>``), so
a certificate with eight GPUs stays under the 64 KiB handshake message Go's TLS accepts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ...devices import CollectedDevice, DeviceEvidence
from ...errors import CollectionError, EvidenceError
from .chain_record import compact_chain
from .device import MEDIA_TYPE, SIM_MEDIA_TYPE, Endorsement, NvidiaGpu, SimNvidiaGpu
from .types import GpuArch


def label(index: int) -> str:
    return f"gpu{index}"


@dataclass
class SimGpuCollector:
    """*count* simulated Hopper GPUs sharing one simulated device (its state directory)."""

    state_dir: Path
    count: int = 1

    @cached_property
    def gpu(self) -> Any:
        """The simulated device, read (or made) once: every certificate and RIM request reuses it."""
        from .sim import load_or_create
        return load_or_create(self.state_dir)

    def collect(self, nonce_for: Callable[[str], bytes]) -> list[CollectedDevice]:
        gpu = self.gpu
        endorsements = {Endorsement.CHAIN: compact_chain(gpu.chain_pem(), [gpu.root]), **gpu.endorsements()}
        state = {"cc": True, "devtools": False, "architecture": GpuArch.HOPPER.value, "mode": "single"}
        return [CollectedDevice(DeviceEvidence(label(i), SIM_MEDIA_TYPE, gpu.report(nonce_for(label(i))),
                                               endorsements), SimNvidiaGpu.name, state)
                for i in range(self.count)]

    def reference(self, ref_id: str) -> bytes | None:
        return self.gpu.rims_by_id().get(ref_id.upper())


@dataclass
class NvmlGpuCollector:
    """Real GPUs through NVML (``collect.collect_gpus``); the RIMs each report names are looked
    up in *rim_store* (a directory, or NVIDIA's RIM service when online) and served by ID."""

    api: Any  # collect.NvmlApi
    settings: Any  # collect.GpuSettings
    rim_store: Any = None  # rim_store.RimStore
    _rims: dict[str, bytes] = field(default_factory=dict)

    def collect(self, nonce_for: Callable[[str], bytes]) -> list[CollectedDevice]:
        from .certs import device_roots
        from .collect import collect_gpus
        gpus = collect_gpus(self.api, self.settings, lambda i: nonce_for(label(i)))
        out = []
        for g in gpus:
            self._remember_rims(g)
            chain = compact_chain(g.chain_pem, device_roots())
            out.append(CollectedDevice(DeviceEvidence(g.label, MEDIA_TYPE, g.report, {Endorsement.CHAIN: chain}),
                                       NvidiaGpu.name, _state(g)))
        return out

    def _remember_rims(self, gpu: Any) -> None:
        from .abi import parse_report, rim_ids
        if self.rim_store is None:
            return
        try:
            ids = rim_ids(parse_report(gpu.report), gpu.arch)
        except EvidenceError as exc:
            raise CollectionError(f"{gpu.label} answered with a report this gateway cannot read: {exc}") from None
        for rim_id in ids:
            if rim_id.upper() in self._rims:
                continue
            xml = self.rim_store.get(rim_id)
            if isinstance(xml, bytes):
                self._rims[rim_id.upper()] = xml

    def reference(self, ref_id: str) -> bytes | None:
        return self._rims.get(ref_id.upper())


def _state(gpu: Any) -> dict[str, Any]:
    return {"cc": bool(gpu.cc_on), "devtools": bool(gpu.devtools), "architecture": str(gpu.arch),
            "mode": str(gpu.multi_gpu_mode)}
