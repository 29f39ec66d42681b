"""Intel TDX as a registry platform: glue between abi/collect/verify/appraise."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...appraisal import Check
from ...errors import ConfigError
from ...evidence import Evidence, VerifiedEvidence
from ...host_probe import HostProbe
from ...policy import Policy
from ...registry import CollateralSource, CollectionNeeds, PlatformBase, PlatformSettings
from ...trust import Trust
from ...tsm import DEFAULT_ROOT, TsmFilesystem
from .abi import parse_quote
from .appraise import appraise_tdx
from .collateral import COLLATERAL_LABEL, CollateralCache, collateral_for_verifier, fmspc_of, serve_until
from .collect import TSM_PROVIDER, collect_quote
from .section import TDX_POLICY
from .verify import TdxTrust, VerifiedTdx, shipped_root, verify_tdx

MEDIA_TYPE = "application/vnd.intel.tdx.quote"
TDX_GUEST_DEVICE = Path("/dev/tdx_guest")


def collateral_cache(source: CollateralSource | None) -> CollateralCache | None:
    """The Intel collateral a TDX gateway embeds next to its quote, when the settings ask for it."""
    if source is None:
        return None
    return CollateralCache(cache_dir=source.cache_dir, pccs_url=source.pccs_url, offline=source.offline)


def describe_quote(raw: bytes) -> dict[str, Any]:
    quote = parse_quote(raw)
    return {"measurements": quote.measurements(), **quote.summary()}


def appraise_verified_tdx(verified: VerifiedEvidence[VerifiedTdx], policy: Policy) -> list[Check]:
    return appraise_tdx(verified.parsed, TDX_POLICY.of(policy))


class TdxPlatform(PlatformBase):
    name = "tdx"
    media_type = MEDIA_TYPE
    policy_sections = (TDX_POLICY,)
    # TDX quotes come only through configfs-tsm; /dev/tdx_guest itself is never opened.
    needs = CollectionNeeds(tsm_provider=TSM_PROVIDER)

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> TdxPlatform:
        return cls(tsm_root=settings.tsm_root, collateral=collateral_cache(settings.collateral))

    @classmethod
    def detect(cls, host: HostProbe) -> bool:
        return host.tsm_provider() == TSM_PROVIDER

    @classmethod
    def near_miss(cls, host: HostProbe) -> ConfigError | None:
        if host.tsm_provider() is None and host.has_device(TDX_GUEST_DEVICE):
            return ConfigError("this is an Intel TDX guest but configfs-tsm is not available, and TDX quotes are "
                               "only collected through configfs-tsm",
                               hint="use a guest kernel >= 6.7 and mount configfs at /sys/kernel/config")
        return None

    @classmethod
    def describe(cls, evidence: Evidence) -> dict[str, Any]:
        return describe_quote(evidence.raw)

    def __init__(self, *, tsm_root: Path = DEFAULT_ROOT, fs: TsmFilesystem | None = None,
                 collateral: CollateralCache | None = None) -> None:
        self.tsm_root, self.fs, self.collateral = tsm_root, fs, collateral

    def collect(self, report_data: bytes) -> Evidence:
        quote = collect_quote(report_data, root=self.tsm_root, fs=self.fs)
        endorsements: dict[str, bytes] = {}
        if self.collateral is not None:
            endorsements[COLLATERAL_LABEL] = self.collateral.get(quote, fmspc_of(quote), datetime.now(UTC))
        return Evidence(self.name, self.media_type, quote, endorsements, serve_until(endorsements))

    def verify(self, evidence: Evidence, trust: Trust, now: datetime) -> VerifiedEvidence:
        quote = parse_quote(evidence.raw)
        collateral = collateral_for_verifier(evidence.raw, evidence.endorsements, trust, now)
        return verify_tdx(quote, collateral, TdxTrust(root=shipped_root()), now, platform=self.name)

    def appraise(self, verified: VerifiedEvidence[VerifiedTdx], policy: Policy) -> list[Check]:
        return appraise_verified_tdx(verified, policy)

