"""The platform registry: every TEE plugs into the generic pipeline through this protocol."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from .appraisal import Check
from .errors import UsageError
from .evidence import Evidence, VerifiedEvidence
from .policy import Policy
from .trust import Trust


class Platform(Protocol):
    name: str
    media_type: str
    simulated: bool

    def collect(self, report_data: bytes) -> Evidence: ...

    def verify(self, evidence: Evidence, trust: Trust, now: datetime) -> VerifiedEvidence: ...

    def appraise(self, verified: VerifiedEvidence, policy: Policy) -> list[Check]: ...


_FACTORIES: dict[str, Callable[..., Platform]] = {}


def register(name: str, factory: Callable[..., Platform]) -> None:
    _FACTORIES[name] = factory


def _load_builtin() -> None:
    if _FACTORIES:
        return
    from .platforms.azure.platform import AzureSnpVtpmPlatform, AzureTdxVtpmPlatform
    from .platforms.sim.platform import SimPlatform
    from .platforms.sim.tdx_platform import SimTdxPlatform
    from .platforms.snp.platform import SnpPlatform
    from .platforms.tdx.platform import TdxPlatform

    register("sev-snp", SnpPlatform)
    register("sim", SimPlatform)
    register("tdx", TdxPlatform)
    register("sim-tdx", SimTdxPlatform)
    register("azure-snp-vtpm", AzureSnpVtpmPlatform)
    register("azure-tdx-vtpm", AzureTdxVtpmPlatform)


def names() -> list[str]:
    _load_builtin()
    return sorted(_FACTORIES)


def get(name: str, **options: Any) -> Platform:
    _load_builtin()
    aliases = {"snp": "sev-snp"}
    key = aliases.get(name, name)
    factory = _FACTORIES.get(key)
    if factory is None:
        raise UsageError(f"unknown platform '{name}'", hint=f"choose one of: {', '.join(names())}")
    return factory(**options)
