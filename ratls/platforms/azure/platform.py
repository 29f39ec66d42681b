"""Azure confidential VMs (vTPM + HCL report) as registry platforms."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import UTC, datetime

from ...appraisal import Check, failed
from ...errors import EvidenceError
from ...evidence import Evidence, VerifiedEvidence
from ...policy import Policy
from ...trust import Trust
from ..snp.abi import parse_report
from ..snp.appraise import appraise_snp
from ..snp.certs import shipped_roots
from ..snp.platform import key_material, snp_trust
from ..snp.verify import verify_snp
from ..tdx.abi import parse_quote
from ..tdx.appraise import appraise_tdx
from ..tdx.collateral import COLLATERAL_LABEL, CollateralCache, collateral_for_verifier, fmspc_of, serve_until
from ..tdx.verify import TdxTrust, shipped_root, verify_tdx
from .appraise import appraise_pcrs
from .collect import IMDS_TD_QUOTE_URL, IMDS_THIM_URL, Runner, collect_vtpm, fetch_vcek, run_tpm2
from .evidence import AzureEvidence, parse_azure_evidence
from .hcl import REPORT_TYPE_SNP, REPORT_TYPE_TDX, HclReport, parse_hcl_report
from .verify import AzureParsed, check_tdreport_matches_quote, verify_vtpm

MEDIA_TYPE = "application/vnd.ratls.azure-vtpm+json"


def _unverified(platform: str, detail: str) -> VerifiedEvidence:
    return VerifiedEvidence(platform=platform, report_data=b"", checks=[failed("azure.evidence", detail)],
                            parsed=None)


class _AzureVtpm(ABC):
    """What both Azure kinds share; subclasses say how the hardware report is verified."""

    name = ""
    media_type = MEDIA_TYPE
    simulated = False
    report_type = 0

    def __init__(self, *, run: Runner = run_tpm2, td_quote_url: str | None = IMDS_TD_QUOTE_URL,
                 thim_url: str | None = IMDS_THIM_URL, collateral: CollateralCache | None = None) -> None:
        self.run, self.td_quote_url, self.thim_url, self.collateral = run, td_quote_url, thim_url, collateral

    def collect(self, report_data: bytes) -> Evidence:
        ev = collect_vtpm(report_data, run=self.run, td_quote_url=self.td_quote_url)
        endorsements: dict[str, bytes] = {}
        if ev.td_quote is not None and self.collateral is not None:
            endorsements[COLLATERAL_LABEL] = self.collateral.get(ev.td_quote, fmspc_of(ev.td_quote),
                                                                 datetime.now(UTC))
        if self.report_type == REPORT_TYPE_SNP and self.thim_url:
            endorsements.update(fetch_vcek(self.thim_url))
        return Evidence(self.name, self.media_type, ev.to_json(), endorsements, serve_until(endorsements))

    def verify(self, evidence: Evidence, trust: Trust, now: datetime) -> VerifiedEvidence:
        ev = parse_azure_evidence(evidence.raw)
        hcl = parse_hcl_report(ev.hcl_report)
        if hcl.report_type != self.report_type:
            return _unverified(self.name, f"the HCL report is a {hcl.kind} report, but the evidence claims "
                                          f"platform {self.name}")
        return verify_vtpm(ev, hcl, self._verify_hardware(ev, hcl, evidence, trust, now))

    @abstractmethod
    def _verify_hardware(self, ev: AzureEvidence, hcl: HclReport, evidence: Evidence, trust: Trust,
                         now: datetime) -> VerifiedEvidence: ...

    def appraise(self, verified: VerifiedEvidence, policy: Policy) -> list[Check]:
        parsed: AzureParsed | None = verified.parsed
        if parsed is None:
            return [failed("policy.azure", "nothing to appraise: the evidence did not verify far enough")]
        return [*self._appraise_hardware(verified, parsed, policy), *appraise_pcrs(parsed.pcrs, policy.vtpm)]

    @abstractmethod
    def _appraise_hardware(self, verified: VerifiedEvidence, parsed: AzureParsed,
                           policy: Policy) -> list[Check]: ...


class AzureSnpVtpmPlatform(_AzureVtpm):
    name = "azure-snp-vtpm"
    report_type = REPORT_TYPE_SNP

    def _verify_hardware(self, ev: AzureEvidence, hcl: HclReport, evidence: Evidence, trust: Trust,
                         now: datetime) -> VerifiedEvidence:
        report = parse_report(hcl.hw_report)
        keys = key_material(Evidence(evidence.platform, evidence.media_type, b"",
                                     {**ev.extras, **evidence.endorsements}))
        return verify_snp(report, keys, snp_trust(trust, shipped_roots(), simulated=False), now, platform=self.name)

    def _appraise_hardware(self, verified: VerifiedEvidence, parsed: AzureParsed, policy: Policy) -> list[Check]:
        return appraise_snp(parsed.hw, policy.snp, verified.summary.get("product"))


class AzureTdxVtpmPlatform(_AzureVtpm):
    name = "azure-tdx-vtpm"
    report_type = REPORT_TYPE_TDX

    def _verify_hardware(self, ev: AzureEvidence, hcl: HclReport, evidence: Evidence, trust: Trust,
                         now: datetime) -> VerifiedEvidence:
        if ev.td_quote is None:
            raise EvidenceError("Azure TDX evidence carries no td_quote")
        quote = parse_quote(ev.td_quote)
        collateral = collateral_for_verifier(ev.td_quote, evidence.endorsements, trust, now)
        verified = verify_tdx(quote, collateral, TdxTrust(root=shipped_root()), now, platform=self.name)
        verified.checks.append(check_tdreport_matches_quote(hcl, quote.body.report_data))
        return verified

    def _appraise_hardware(self, verified: VerifiedEvidence, parsed: AzureParsed, policy: Policy) -> list[Check]:
        return appraise_tdx(parsed.hw, verified.tcb, policy.tdx)
