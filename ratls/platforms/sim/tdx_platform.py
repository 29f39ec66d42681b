"""The simulated TDX platform: a fake configfs-tsm tree (provider ``tdx_guest``) answered by a
locally signed quote chain, collateral served from the collateral cache, verified by the real
TDX verifier against the simulated root the policy pins."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...appraisal import Check
from ...evidence import Evidence, VerifiedEvidence
from ...fileutil import write_atomic
from ...policy import Policy
from ...registry import PlatformSettings
from ...trust import Trust
from ..tdx.abi import parse_quote
from ..tdx.collateral import COLLATERAL_LABEL, CollateralCache, collateral_for_verifier, fmspc_of, serve_until
from ..tdx.collect import TSM_PROVIDER, collect_quote
from ..tdx.platform import MEDIA_TYPE, appraise_verified_tdx, describe_quote
from ..tdx.section import TDX_POLICY
from ..tdx.verify import TdxTrust, VerifiedTdx, shipped_root, verify_tdx
from .base import SimulatorBase
from .chain import default_state_dir
from .fake_tsm import FakeTsm
from .roots import pin_check, tdx_quote_root
from .tdx_chain import SIM_FMSPC, SimTdxChain, load_or_create_tdx, tdx_state_dir


class SimTdxPlatform(SimulatorBase):
    name = "sim-tdx"
    media_type = MEDIA_TYPE
    policy_sections = (TDX_POLICY,)

    @classmethod
    def describe(cls, evidence: Evidence) -> dict[str, Any]:
        return describe_quote(evidence.raw)

    @classmethod
    def reference_policy(cls, settings: PlatformSettings) -> dict[str, Any]:
        chain = load_or_create_tdx(tdx_state_dir(settings.sim_state_dir or default_state_dir()))
        return {"simulated": {"root_sha256": chain.root_sha256},
                TDX_POLICY.key: {"mrtd": [chain.mrtd.hex()], "debug": False, "sept_ve_disable": True,
                                 "accept_tcb_status": ["UpToDate"]}}

    def __init__(self, *, state_dir: Path | None = None, chain: SimTdxChain | None = None) -> None:
        self._state_dir = tdx_state_dir(state_dir or default_state_dir())
        self._chain = chain
        self._guest: tuple[FakeTsm, CollateralCache] | None = None

    @property
    def chain(self) -> SimTdxChain:
        if self._chain is None:
            self._chain = load_or_create_tdx(self._state_dir)
        return self._chain

    def _simulated_guest(self) -> tuple[FakeTsm, CollateralCache]:
        """Set up once: the configfs-tsm tree the chain answers, and a collateral cache seeded
        with the chain's collateral (what an operator does for an offline TDX gateway)."""
        if self._guest is None:
            chain = self.chain
            tsm = FakeTsm(self._state_dir / "configfs-tsm" / "report",
                          lambda data, _level: (chain.sign_quote(chain.body(data)), None), provider=TSM_PROVIDER)
            cache_dir = self._state_dir / "collateral"
            seeded = cache_dir / f"tdx-collateral-{SIM_FMSPC.hex()}.json"
            if not seeded.exists():
                write_atomic(seeded, chain.collateral)
            self._guest = tsm, CollateralCache(cache_dir=cache_dir, pccs_url=None, offline=True)
        return self._guest

    def collect(self, report_data: bytes) -> Evidence:
        tsm, cache = self._simulated_guest()
        quote = collect_quote(report_data, root=tsm.root, fs=tsm)
        collateral = cache.get(quote, fmspc_of(quote), datetime.now(UTC))
        endorsements = {COLLATERAL_LABEL: collateral}
        return Evidence(self.name, self.media_type, quote, endorsements, serve_until(endorsements))

    def verify(self, evidence: Evidence, trust: Trust, now: datetime) -> VerifiedEvidence:
        quote = parse_quote(evidence.raw)
        root = tdx_quote_root(quote.pck_chain_pem)
        root_check = pin_check(root, trust, what="TDX root",
                               missing="simulated quote carries no self-signed root in its PCK chain")
        anchor = root if root is not None and root_check.ok else shipped_root()
        collateral = collateral_for_verifier(evidence.raw, evidence.endorsements, trust, now)
        verified = verify_tdx(quote, collateral, TdxTrust(root=anchor, simulated=True), now, platform=self.name)
        verified.checks.insert(0, root_check)
        return verified

    def appraise(self, verified: VerifiedEvidence[VerifiedTdx], policy: Policy) -> list[Check]:
        return appraise_verified_tdx(verified, policy)
