"""SEV-SNP as a registry platform: glue between abi/collect/verify/appraise."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from ...appraisal import Check
from ...errors import EvidenceError
from ...evidence import Evidence, FetchFailed, VerifiedEvidence
from ...host_probe import HostProbe
from ...policy import Policy
from ...registry import CollectionNeeds, PlatformBase, PlatformSettings
from ...trust import Trust
from ...tsm import DEFAULT_ROOT, TsmFilesystem
from ...x509util import looks_like_pem
from . import collect as snp_collect
from .abi import Endorsement, Product, SigningKey, parse_report
from .appraise import appraise_snp
from .certs import ProductRoots, load_certificates, shipped_roots
from .kds import KdsClient
from .section import SNP_POLICY
from .verify import KeyMaterial, NoCache, SignatureCache, SnpTrust, VerifiedSnp, verify_snp

MEDIA_TYPE = "application/vnd.amd.sev-snp.attestation-report"
_DEFAULT_CACHE = SignatureCache()


def _crls(trust: Trust) -> list[x509.CertificateRevocationList]:
    out = []
    for data in trust.crls:
        try:
            out.append(x509.load_pem_x509_crl(data) if looks_like_pem(data) else x509.load_der_x509_crl(data))
        except ValueError as exc:
            raise EvidenceError(f"unreadable CRL: {exc}") from None
    return out


def snp_trust(trust: Trust, roots: dict[Product, ProductRoots], *, simulated: bool) -> SnpTrust:
    """SNP trust from the generic settings: the given roots plus CRLs and the signature cache."""
    cache = trust.signature_cache if trust.signature_cache is not None else _DEFAULT_CACHE
    return SnpTrust(roots=roots, crls=_crls(trust), require_crl=trust.require_crl, simulated=simulated,
                    cache=cache if cache is not False else NoCache())


def key_material(evidence: Evidence) -> KeyMaterial | None:
    """The VCEK/VLEK and intermediates carried with the evidence (cert table, CMW, CLI)."""
    e = evidence.endorsements
    key_der = e.get(Endorsement.VCEK) or e.get(Endorsement.VLEK)
    if key_der is None:
        return None
    key = load_certificates(key_der, "endorsement key (VCEK/VLEK)")
    if len(key) != 1:
        raise EvidenceError(f"endorsement key holds {len(key)} certificates; give only the VCEK or VLEK")
    intermediates: list[x509.Certificate] = []
    for label in (Endorsement.ASK, Endorsement.ASVK, Endorsement.ARK, Endorsement.CHAIN):
        if label in e:
            intermediates += load_certificates(e[label], f"{label} certificate")
    return KeyMaterial(key[0], intermediates)


def describe_report(raw: bytes) -> dict[str, Any]:
    """An SNP report decoded for display; its measurement identifies the launched image."""
    report = parse_report(raw)
    return {"measurements": {"measurement": report.measurement.hex()}, **report.summary()}


def appraise_verified_snp(verified: VerifiedEvidence[VerifiedSnp], policy: Policy) -> list[Check]:
    return appraise_snp(verified.parsed, SNP_POLICY.of(policy))


class SnpPlatform(PlatformBase):
    name = "sev-snp"
    aliases = ("snp",)
    media_type = MEDIA_TYPE
    policy_sections = (SNP_POLICY,)
    needs = CollectionNeeds(tsm_provider=snp_collect.TSM_PROVIDER, tsm_required=False,
                            device=snp_collect.SEV_GUEST_DEVICE, device_check="tee.sev-guest")

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> SnpPlatform:
        return cls(tsm_root=settings.tsm_root)

    @classmethod
    def detect(cls, host: HostProbe) -> bool:
        provider = host.tsm_provider()
        if provider is not None:
            return provider == snp_collect.TSM_PROVIDER
        return host.has_device(snp_collect.SEV_GUEST_DEVICE)

    @classmethod
    def describe(cls, evidence: Evidence) -> dict[str, Any]:
        return describe_report(evidence.raw)

    def __init__(self, *, tsm_root: Path = DEFAULT_ROOT, device: Path = snp_collect.SEV_GUEST_DEVICE,
                 vmpl: int | None = None, fs: TsmFilesystem | None = None) -> None:
        self.tsm_root, self.device, self.vmpl, self.fs = tsm_root, device, vmpl, fs

    def collect(self, report_data: bytes) -> Evidence:
        got = snp_collect.collect(report_data, tsm_root=self.tsm_root, device=self.device, vmpl=self.vmpl,
                                  fs=self.fs)
        return Evidence(self.name, self.media_type, got.report, dict(got.certs))

    def _trust(self, trust: Trust) -> SnpTrust:
        return snp_trust(trust, shipped_roots(), simulated=False)

    def verify(self, evidence: Evidence, trust: Trust, now: datetime) -> VerifiedEvidence:
        report = parse_report(evidence.raw)
        keys = key_material(evidence)
        if keys is None:
            keys = self._fetch(report, trust)
        return verify_snp(report, keys, self._trust(trust), now, platform=self.name)

    def _fetch(self, report, trust: Trust) -> KeyMaterial | FetchFailed | None:  # type: ignore[no-untyped-def]
        if report.signer_info.signing_key != SigningKey.VCEK or report.product is None:
            return None
        kds = KdsClient(cache_dir=trust.kds_cache_dir, offline=trust.kds_offline)
        try:
            der_bytes = kds.fetch_vcek(report.product, report)
        except EvidenceError as exc:
            return FetchFailed.from_error(exc)
        return KeyMaterial(load_certificates(der_bytes, "VCEK from AMD KDS")[0])

    def appraise(self, verified: VerifiedEvidence[VerifiedSnp], policy: Policy) -> list[Check]:
        return appraise_verified_snp(verified, policy)

