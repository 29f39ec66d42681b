"""The simulated platform as a registry platform."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from ...appraisal import Check
from ...evidence import Evidence, VerifiedEvidence
from ...policy import Policy
from ...registry import PlatformSettings
from ...trust import Trust
from ..snp.abi import Endorsement, Product, parse_report
from ..snp.certs import ProductRoots, load_certificate
from ..snp.platform import MEDIA_TYPE, appraise_verified_snp, describe_report, key_material, snp_trust
from ..snp.section import SNP_POLICY
from ..snp.verify import VerifiedSnp, verify_snp
from .base import SimulatorBase
from .chain import SimChain, load_chain, load_or_create
from .roots import pin_check


class SimPlatform(SimulatorBase):
    """SEV-SNP-format reports signed by a local chain (development; appraised with ``sev-snp``)."""

    name = "sim"
    media_type = MEDIA_TYPE
    policy_sections = (SNP_POLICY,)

    @classmethod
    def describe(cls, evidence: Evidence) -> dict[str, Any]:
        return describe_report(evidence.raw)

    @classmethod
    def reference_policy(cls, settings: PlatformSettings) -> dict[str, Any]:
        chain = load_or_create(settings.sim_state_dir)
        return {"simulated": {"root_sha256": chain.root_sha256},
                SNP_POLICY.key: {"measurements": [chain.measurement.hex()],
                                 "guest_policy": {"debug": False, "migrate_ma": False}, "vmpl": 0}}

    @classmethod
    def local_endorsements(cls, settings: PlatformSettings) -> dict[str, bytes]:
        return {} if settings.sim_state_dir is None else load_chain(settings.sim_state_dir).endorsements()

    def __init__(self, *, state_dir: Path | None = None, chain: SimChain | None = None) -> None:
        self._state_dir = state_dir
        self._chain = chain

    @property
    def chain(self) -> SimChain:
        if self._chain is None:
            self._chain = load_or_create(self._state_dir)
        return self._chain

    def collect(self, report_data: bytes) -> Evidence:
        chain = self.chain
        report = chain.sign_report(chain.report_fields(report_data))
        return Evidence(self.name, self.media_type, report, chain.endorsements())

    def verify(self, evidence: Evidence, trust: Trust, now: datetime) -> VerifiedEvidence:
        report = parse_report(evidence.raw)
        ark_der = evidence.endorsements.get(Endorsement.ARK)
        ask_der = evidence.endorsements.get(Endorsement.ASK)
        roots: dict[Product, ProductRoots] = {}
        ark = load_certificate(ark_der, "simulated ARK") if ark_der is not None and ask_der is not None else None
        root_check = pin_check(ark, trust, what="root", missing="simulated evidence carries no ARK/ASK")
        if ark is not None and ask_der is not None and root_check.ok:
            roots = {Product.MILAN: ProductRoots(Product.MILAN, ark, load_certificate(ask_der, "simulated ASK"), None)}
        keys = key_material(evidence)
        if keys is not None:
            keys.intermediates = [c for c in keys.intermediates if c.subject != c.issuer]
        verified = verify_snp(report, keys, snp_trust(trust, roots, simulated=True), now, platform=self.name)
        verified.checks.insert(0, root_check)
        return verified

    def appraise(self, verified: VerifiedEvidence[VerifiedSnp], policy: Policy) -> list[Check]:
        return appraise_verified_snp(verified, policy)
