"""Intel TDX as a registry platform: glue between abi/collect/verify/appraise."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ...appraisal import Check
from ...evidence import Evidence, VerifiedEvidence
from ...policy import Policy
from ...trust import Trust
from ...tsm import DEFAULT_ROOT, TsmFilesystem
from .abi import parse_quote
from .appraise import appraise_tdx
from .collateral import COLLATERAL_LABEL, CollateralCache, collateral_for_verifier, fmspc_of, serve_until
from .collect import collect_quote
from .verify import TdxTrust, shipped_root, verify_tdx

MEDIA_TYPE = "application/vnd.intel.tdx.quote"



class TdxPlatform:
    name = "tdx"
    media_type = MEDIA_TYPE
    simulated = False

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

    def appraise(self, verified: VerifiedEvidence, policy: Policy) -> list[Check]:
        return appraise_tdx(verified.parsed, verified.tcb, policy.tdx)

