"""The TEE platform the gateway's evidence comes from, built from ``identity`` in the
configuration (detected when it says ``auto``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ratls import registry
from ratls.registry import Platform

from .config import IdentityConfig
from .platform_detect import detect


def build_platform(identity: IdentityConfig) -> Platform:
    name = identity.platform
    tsm_root = Path(identity.tsm_root)
    if name == "auto":
        name = detect(tsm_root=tsm_root)
    options: dict[str, Any] = {}
    if name in ("sev-snp", "tdx"):
        options["tsm_root"] = tsm_root
    if name in ("sim", "sim-tdx") and identity.sim_state_dir:
        options["state_dir"] = Path(identity.sim_state_dir)
    if name in ("tdx", "azure-tdx-vtpm") and identity.tdx.embed:
        from ratls.platforms.tdx.collateral import CollateralCache
        tdx = identity.tdx
        options["collateral"] = CollateralCache(cache_dir=Path(tdx.cache_dir), pccs_url=tdx.pccs_url,
                                                offline=tdx.offline)
    return registry.get(name, **options)
