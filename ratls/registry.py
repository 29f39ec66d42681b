"""The platform registry: every TEE plugs into the generic pipeline, the policy, the CLI, the
gateway config and detection through the :class:`PlatformType` protocol, and nothing outside its
platform folder names it. Platforms of other packages register through the ``ratls.platforms``
entry-point group (or :func:`register`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Protocol

from .appraisal import Check
from .errors import ConfigError, UsageError
from .evidence import Evidence, VerifiedEvidence
from .host_probe import HostProbe
from .policy import Policy, PolicySection
from .trust import Trust
from .tsm import DEFAULT_ROOT

ENTRY_POINT_GROUP = "ratls.platforms"
log = logging.getLogger("ratls.registry")


@dataclass(frozen=True)
class CollateralSource:
    """Where a platform fetches endorsements it embeds next to its evidence (Intel collateral)."""

    cache_dir: Path
    pccs_url: str | None
    offline: bool = False


@dataclass(frozen=True)
class PlatformSettings:
    """How to reach a TEE, as a CLI or the gateway config says it; each platform takes what it needs."""

    tsm_root: Path = DEFAULT_ROOT
    sim_state_dir: Path | None = None
    collateral: CollateralSource | None = None


@dataclass(frozen=True)
class CollectionNeeds:
    """What evidence collection needs from the machine, for ``ratls doctor`` to check."""

    tsm_provider: str | None = None  # collection goes through configfs-tsm with this provider
    tsm_required: bool = True  # False: a legacy device is used when configfs-tsm is absent
    device: Path | None = None  # a device node opened read-write (the legacy path, or the only one)
    device_check: str = "tee.device"
    tools: tuple[str, ...] = ()  # commands collection runs


class Platform(Protocol):
    """A platform instance: produces, verifies and appraises its evidence."""

    name: str
    media_type: str
    simulated: bool

    def collect(self, report_data: bytes) -> Evidence: ...

    def verify(self, evidence: Evidence, trust: Trust, now: datetime) -> VerifiedEvidence: ...

    def appraise(self, verified: VerifiedEvidence, policy: Policy) -> list[Check]: ...


class PlatformType(Protocol):
    """What the registry and the tools ask a platform class (``PlatformBase`` gives defaults)."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]]
    media_type: ClassVar[str]
    simulated: ClassVar[bool]
    policy_sections: ClassVar[tuple[PolicySection[Any], ...]]
    needs: ClassVar[CollectionNeeds | None]

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> Platform: ...

    @classmethod
    def detect(cls, host: HostProbe) -> bool: ...

    @classmethod
    def near_miss(cls, host: HostProbe) -> ConfigError | None: ...

    @classmethod
    def describe(cls, evidence: Evidence) -> dict[str, Any]: ...

    @classmethod
    def local_endorsements(cls, settings: PlatformSettings) -> dict[str, bytes]: ...

    # adds the platform's own subcommands to the CLI's subparsers (shared by related platforms)
    commands: ClassVar[Callable[[Any], None] | None]

    def __call__(self, **options: Any) -> Platform: ...


class PlatformBase:
    """Defaults for the optional parts of :class:`PlatformType`."""

    aliases: ClassVar[tuple[str, ...]] = ()
    simulated: ClassVar[bool] = False
    policy_sections: ClassVar[tuple[PolicySection[Any], ...]] = ()
    needs: ClassVar[CollectionNeeds | None] = None
    commands: ClassVar[Callable[[Any], None] | None] = None

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> Any:
        return cls()

    @classmethod
    def detect(cls, host: HostProbe) -> bool:
        return False

    @classmethod
    def near_miss(cls, host: HostProbe) -> ConfigError | None:
        return None

    @classmethod
    def describe(cls, evidence: Evidence) -> dict[str, Any]:
        return {"measurements": {}}

    @classmethod
    def local_endorsements(cls, settings: PlatformSettings) -> dict[str, bytes]:
        return {}

    @classmethod
    def reference_policy(cls, settings: PlatformSettings) -> dict[str, Any] | None:
        """A simulator's policy lines that accept exactly its own evidence (root pin and section);
        None for hardware, whose reference values come from its vendor and image build."""
        return None


class DeviceType(Protocol):
    """A device (GPU) whose evidence accompanies the CPU TEE's in a certificate (ratls.devices).
    Types of one ``family`` (real and simulated NVIDIA GPUs) share a policy section and are
    appraised together, so a policy's count and requirements cover all of them."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]]
    family: ClassVar[str]
    media_type: ClassVar[str]
    simulated: ClassVar[bool]
    policy_sections: ClassVar[tuple[PolicySection[Any], ...]]

    @classmethod
    def verify(cls, device: Any, expected_nonce: bytes | None, state: Any, trust: Trust,
               now: datetime) -> Any: ...

    @classmethod
    def appraise(cls, verified: list[Any], policy: Policy) -> list[Check]: ...

    @classmethod
    def summary(cls, verified: Any) -> dict[str, Any]: ...

    @classmethod
    def describe(cls, device: Any) -> dict[str, Any]: ...

    @classmethod
    def reference_ids(cls, device: Any) -> list[str]: ...  # reference documents it needs, by ID


_TYPES: dict[str, PlatformType] = {}
_DEVICES: dict[str, DeviceType] = {}
_loaded = False


def register(kind: PlatformType) -> None:
    """Add a platform after the built-in ones (detection asks them in this order); a name or
    alias that is already taken is a programming error."""
    _load()
    _add(kind)


def _add(kind: PlatformType) -> None:
    taken = {n for t in _TYPES.values() for n in (t.name, *t.aliases)}
    for name in (kind.name, *kind.aliases):
        if name in taken and _TYPES.get(kind.name) is not kind:
            raise ConfigError(f"platform name '{name}' is registered twice")
    _TYPES[kind.name] = kind


def unregister(name: str) -> None:
    _TYPES.pop(name, None)


def _load() -> None:
    global _loaded
    if _loaded:
        return
    from .platforms.azure.platform import AzureSnpVtpmPlatform, AzureTdxVtpmPlatform
    from .platforms.nvidia.device import NvidiaGpu, SimNvidiaGpu
    from .platforms.sim.platform import SimPlatform
    from .platforms.sim.tdx_platform import SimTdxPlatform
    from .platforms.snp.platform import SnpPlatform
    from .platforms.tdx.platform import TdxPlatform
    for kind in (SnpPlatform, TdxPlatform, AzureSnpVtpmPlatform, AzureTdxVtpmPlatform, SimPlatform, SimTdxPlatform):
        _add(kind)  # type: ignore[arg-type]
    for device in (NvidiaGpu, SimNvidiaGpu):
        _DEVICES[device.name] = device  # type: ignore[assignment]
    _loaded = True  # only now: a failed import is raised again on the next call, never a partial registry
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            _add(ep.load())
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the built-in platforms down
            log.warning("platform plugin %s (%s) not loaded: %s", ep.name, ep.value, exc)


def types() -> Iterator[PlatformType]:
    _load()
    return iter(list(_TYPES.values()))


def names() -> list[str]:
    return sorted(t.name for t in types())


def hardware_names() -> tuple[str, ...]:
    """What a policy's ``platforms:`` may list (simulated platforms are accepted by allow_simulated)."""
    return tuple(t.name for t in types() if not t.simulated)


def choices_text() -> str:
    """For CLI help: "sev-snp (snp), tdx, ..., sim or sim-tdx"."""
    shown = [t.name + (f" ({', '.join(t.aliases)})" if t.aliases else "") for t in types()]
    return ", ".join(shown[:-1]) + f" or {shown[-1]}" if len(shown) > 1 else "".join(shown)


def lookup(name: str) -> PlatformType:
    for kind in types():
        if name == kind.name or name in kind.aliases:
            return kind
    raise UsageError(f"unknown platform '{name}'", hint=f"choose one of: {', '.join(names())}")


def get(name: str, **options: Any) -> Platform:
    """A platform built from its constructor's own options (tests, embedding code)."""
    return lookup(name)(**options)


def create(name: str, settings: PlatformSettings) -> Platform:
    """A platform built from the generic settings a CLI or the gateway config gives."""
    return lookup(name).from_settings(settings)


def policy_sections() -> list[PolicySection[Any]]:
    seen: dict[str, PolicySection[Any]] = {}
    for kind in [*types(), *device_types()]:
        for section in kind.policy_sections:
            seen.setdefault(section.key, section)
    return list(seen.values())


def register_device(kind: DeviceType) -> None:
    _load()
    if kind.name in _DEVICES and _DEVICES[kind.name] is not kind:
        raise ConfigError(f"device type '{kind.name}' is registered twice")
    _DEVICES[kind.name] = kind


def device_types() -> list[DeviceType]:
    _load()
    return list(_DEVICES.values())


def describe_device(device: Any) -> dict[str, Any]:
    """A device record decoded for display (``cert show``); nothing is verified."""
    kind = next((d for d in device_types() if d.media_type == device.media_type), None)
    base = {"media_type": device.media_type, "bytes": len(device.raw), "endorsements": sorted(device.endorsements)}
    if kind is None:
        return base
    return {"type": kind.name, "simulated": kind.simulated, **base, **kind.describe(device)}


def lookup_device(name: str) -> DeviceType | None:
    """A device type by name or alias; None when *name* is no device (it may be a platform)."""
    return next((d for d in device_types() if name == d.name or name in d.aliases), None)


def using(section: PolicySection[Any]) -> list[PlatformType]:
    return [t for t in types() if any(s.key == section.key for s in t.policy_sections)]


def simulated(name: str) -> bool:
    try:
        return lookup(name).simulated
    except UsageError:
        return False


def describe(evidence: Evidence) -> dict[str, Any] | None:
    """The decoded hardware report for display (``cert show``), None for an unknown platform."""
    kind = next((t for t in types() if t.name == evidence.platform), None)
    kind = kind or next((t for t in types() if t.media_type == evidence.media_type), None)
    return None if kind is None else kind.describe(evidence)


def detect(host: HostProbe) -> str:
    """The hardware TEE this machine is, or a ConfigError saying why none was found."""
    hardware = [t for t in types() if not t.simulated]
    for kind in hardware:
        if kind.detect(host):
            return kind.name
    provider = host.tsm_provider()
    if provider is not None:
        raise ConfigError(f"configfs-tsm provider '{provider}' is not supported")
    for kind in hardware:
        problem = kind.near_miss(host)
        if problem is not None:
            raise problem
    raise ConfigError("no TEE detected: no configfs-tsm, /dev/sev-guest or Azure vTPM HCL report, so no hardware "
                      "evidence can be produced",
                      hint="run inside an SEV-SNP or TDX confidential VM, or set identity.platform: sim "
                           "(RATLS_GATEWAY__IDENTITY__PLATFORM=sim) for development")


def add_commands(commands: Any) -> None:
    """Let platforms add their own subcommands (``ratls sim``), once per contributing function."""
    added: set[Any] = set()
    for kind in types():
        adder = getattr(kind, "commands", None)
        if adder is not None and adder not in added:
            added.add(adder)
            adder(commands)
