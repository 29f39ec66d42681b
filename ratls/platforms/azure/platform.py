"""Azure confidential VMs (vTPM + HCL report) as registry platforms."""

from __future__ import annotations

import tempfile
from abc import abstractmethod
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...appraisal import Check, failed
from ...errors import EvidenceError, RatlsError
from ...evidence import Evidence, VerifiedEvidence
from ...host_probe import HostProbe
from ...policy import Policy
from ...registry import CollectionNeeds, PlatformBase, PlatformSettings
from ...trust import Trust
from ..snp.abi import parse_report
from ..snp.appraise import appraise_snp
from ..snp.certs import shipped_roots
from ..snp.platform import describe_report, key_material, snp_trust
from ..snp.section import SNP_POLICY
from ..snp.verify import VerifiedSnp, verify_snp
from ..tdx.abi import parse_quote
from ..tdx.appraise import appraise_tdx
from ..tdx.collateral import COLLATERAL_LABEL, CollateralCache, collateral_for_verifier, fmspc_of, serve_until
from ..tdx.platform import collateral_cache, describe_quote
from ..tdx.section import TDX_POLICY
from ..tdx.verify import TdxTrust, VerifiedTdx, shipped_root, verify_tdx
from .appraise import appraise_pcrs
from .collect import HCL_REPORT_INDEX, IMDS_TD_QUOTE_URL, IMDS_THIM_URL, Runner, collect_vtpm, fetch_vcek, run_tpm2
from .evidence import AzureEvidence, parse_azure_evidence
from .hcl import REPORT_TYPE_SNP, REPORT_TYPE_TDX, HclReport, parse_hcl_report
from .section import VTPM_POLICY
from .verify import AzureParsed, check_tdreport_matches_quote, verify_vtpm

MEDIA_TYPE = "application/vnd.ratls.azure-vtpm+json"
TPM_DEVICE = Path("/dev/tpmrm0")


def hcl_report_type(host: HostProbe) -> int | None:
    """An Azure confidential VM shows no TEE device to the guest, only a vTPM holding the
    paravisor's HCL report; its hardware report type tells SNP from TDX."""
    def probe() -> int | None:
        if not host.has_device(TPM_DEVICE):
            return None
        try:
            with tempfile.TemporaryDirectory(prefix="ratls-probe-") as tmp:
                (host.run or run_tpm2)(["tpm2_nvread", "-C", "o", "-o", "hcl.bin", HCL_REPORT_INDEX], Path(tmp))
                return parse_hcl_report((Path(tmp) / "hcl.bin").read_bytes()).report_type
        except (RatlsError, OSError):
            return None  # a TPM without the HCL index: not an Azure confidential VM
    result: int | None = host.remember("azure-hcl-report-type", probe)
    return result


def describe_azure(raw: bytes) -> dict[str, Any]:
    ev = parse_azure_evidence(raw)
    hcl = parse_hcl_report(ev.hcl_report)
    if hcl.report_type == REPORT_TYPE_SNP:
        view = describe_report(hcl.hw_report)
    elif ev.td_quote is not None:
        view = describe_quote(ev.td_quote)
    else:
        view = {"measurements": {}}
    # The hardware measurement is the paravisor's; the guest image is measured into the vTPM
    # PCRs. Shown as reported: `ratls verify` checks them against the signed TPM quote.
    view["measurements"].update({f"pcr{i}": value.hex() for i, value in enumerate(ev.pcrs)})
    view["hcl"] = {"version": hcl.version, "report_type": hcl.kind, "vm_configuration": hcl.vm_configuration()}
    return view


def _unverified(platform: str, detail: str) -> VerifiedEvidence:
    return VerifiedEvidence(platform=platform, report_data=b"", checks=[failed("azure.evidence", detail)],
                            parsed=None)


class _AzureVtpm(PlatformBase):
    """What both Azure kinds share; subclasses say how the hardware report is verified."""

    name = ""
    media_type = MEDIA_TYPE
    report_type = 0
    needs = CollectionNeeds(device=TPM_DEVICE, device_check="tee.vtpm", tools=("tpm2_nvread", "tpm2_quote"))

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> _AzureVtpm:
        return cls(collateral=collateral_cache(settings.collateral))

    @classmethod
    def detect(cls, host: HostProbe) -> bool:
        return host.tsm_provider() is None and hcl_report_type(host) == cls.report_type

    @classmethod
    def describe(cls, evidence: Evidence) -> dict[str, Any]:
        return describe_azure(evidence.raw)

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
        return [*self._appraise_hardware(verified, parsed, policy), *appraise_pcrs(parsed.pcrs, VTPM_POLICY.of(policy))]

    @abstractmethod
    def _appraise_hardware(self, verified: VerifiedEvidence, parsed: AzureParsed,
                           policy: Policy) -> list[Check]: ...


class AzureSnpVtpmPlatform(_AzureVtpm):
    name = "azure-snp-vtpm"
    report_type = REPORT_TYPE_SNP
    policy_sections = (SNP_POLICY, VTPM_POLICY)

    def _verify_hardware(self, ev: AzureEvidence, hcl: HclReport, evidence: Evidence, trust: Trust,
                         now: datetime) -> VerifiedEvidence:
        report = parse_report(hcl.hw_report)
        keys = key_material(Evidence(evidence.platform, evidence.media_type, b"",
                                     {**ev.extras, **evidence.endorsements}))
        return verify_snp(report, keys, snp_trust(trust, shipped_roots(), simulated=False), now, platform=self.name)

    def _appraise_hardware(self, verified: VerifiedEvidence, parsed: AzureParsed, policy: Policy) -> list[Check]:
        if not isinstance(parsed.hw, VerifiedSnp):
            return [failed("policy.azure", "the hardware report under the paravisor is not an SEV-SNP report")]
        return appraise_snp(parsed.hw, SNP_POLICY.of(policy))


class AzureTdxVtpmPlatform(_AzureVtpm):
    name = "azure-tdx-vtpm"
    report_type = REPORT_TYPE_TDX
    policy_sections = (TDX_POLICY, VTPM_POLICY)

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
        if not isinstance(parsed.hw, VerifiedTdx):
            return [failed("policy.azure", "the hardware report under the paravisor is not a TD quote")]
        return appraise_tdx(parsed.hw, TDX_POLICY.of(policy))
