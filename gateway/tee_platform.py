"""The TEE platform the gateway collects evidence from, built from ``identity:`` in its config."""

from __future__ import annotations

from pathlib import Path

from ratls import registry
from ratls.host_probe import HostProbe
from ratls.registry import CollateralSource, Platform, PlatformSettings

from .config import IdentityConfig


def platform_settings(identity: IdentityConfig) -> PlatformSettings:
    collateral = identity.tdx
    return PlatformSettings(
        tsm_root=Path(identity.tsm_root),
        sim_state_dir=Path(identity.sim_state_dir) if identity.sim_state_dir else None,
        collateral=CollateralSource(cache_dir=Path(collateral.cache_dir), pccs_url=collateral.pccs_url,
                                    offline=collateral.offline) if collateral.embed else None)


def build_platform(identity: IdentityConfig) -> Platform:
    """``auto`` asks every registered platform whether this machine is one of its kind."""
    settings = platform_settings(identity)
    name = identity.platform
    if name == "auto":
        name = registry.detect(HostProbe(settings.tsm_root))
    return registry.create(name, settings)
