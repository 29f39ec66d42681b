"""NVIDIA GPUs as device types of the registry (real and simulated): verify one GPU's evidence
(report, device chain, RIMs, OCSP) and appraise all of them against ``nvidia-gpu:``."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ...appraisal import Check, failed, passed
from ...devices import DeviceEvidence
from ...errors import EvidenceError
from ...evidence import FetchFailed
from ...policy import Policy
from ...trust import Trust
from ...x509util import X509_ERRORS
from .appraise import appraise_gpus
from .section import NVIDIA_GPU_POLICY
from .types import RimKind, VerifiedGpu, VerifiedRim

MEDIA_TYPE = "application/vnd.ratls.nvidia-spdm-measurements"
SIM_MEDIA_TYPE = "application/vnd.ratls.sim-nvidia-spdm-measurements"
FAMILY = "nvidia-gpu"


class Endorsement:
    """Labels of a GPU's own endorsements (a nested collection under the GPU's label)."""

    CHAIN = "chain"  # the device chain, leaf first: DER back to back without the pinned root, or PEM
    DRIVER_RIM = "driver-rim"
    VBIOS_RIM = "vbios-rim"
    ROOT = "root"  # simulated only: the simulated device root (pinned by the policy)
    RIM_ROOT = "rim-root"  # simulated only: the simulated RIM root (pinned by the policy)
    OCSP_PREFIX = "ocsp-"  # ocsp-1..: DER OCSP answers for chain certificates 1.. (stapled)

    RIM_LABELS: ClassVar[dict[RimKind, str]] = {RimKind.DRIVER: DRIVER_RIM, RimKind.VBIOS: VBIOS_RIM}


def _renamed(checks: list[Check], label: str) -> list[Check]:
    # the verify layers name checks "gpu.<step>"; in a certificate they are per device ("gpu0.<step>")
    return [Check(c.name.replace("gpu.", f"{label}.", 1) if c.name.startswith("gpu.") else c.name, c.ok, c.detail)
            for c in checks]


def _rim_xml(device: DeviceEvidence, kind: RimKind, rim_id: str | None, trust: Trust) -> bytes | FetchFailed | None:
    """The verifier's RIM directory (or NVIDIA's RIM service when online), else stapled with the
    evidence (``--driver-rim``), else what the server handed out for that ID - in that order."""
    store = rim_store(trust) if rim_id is not None else None
    own = store.get(rim_id) if store is not None and rim_id is not None else None
    if isinstance(own, bytes):
        return own  # the verifier's own RIMs win over anything the evidence or the server hands out
    stapled = device.endorsements.get(Endorsement.RIM_LABELS[kind])
    if stapled is not None or rim_id is None:
        return stapled
    held = trust.device_references.get(rim_id)
    return held if held is not None else own


def rim_store(trust: Trust) -> Any:
    """The verifier's own RIM store (a directory, and NVIDIA's RIM service only when online)."""
    from .rim_store import RimStore
    if trust.nvidia_rim_dir is None and trust.kds_offline:
        return None
    return RimStore(trust.nvidia_rim_dir, trust.kds_cache_dir, offline=trust.kds_offline)


def verify_rims(gpu: VerifiedGpu, device: DeviceEvidence, trust: Trust, rim_roots: Sequence[x509.Certificate],
                now: datetime) -> None:
    """Driver and VBIOS RIMs chosen by the IDs the report states, each verified, then the
    measurements compared. Nothing is compared when neither RIM is available (the policy's
    require_rim_match decides); a RIM that is present is always checked."""
    from .abi import rim_ids
    from .measurements import compare_measurements
    from .rim_verify import verify_rim
    from .verify_cache import cached_rim
    report = gpu.report
    if report is None or gpu.arch is None:
        return
    try:
        driver_id, vbios_id = rim_ids(report, gpu.arch)
    except EvidenceError as exc:
        gpu.checks.append(failed("gpu.rim-ids", f"the report does not name its RIMs: {exc}"))
        return
    expected = {RimKind.DRIVER: (driver_id, report.opaque.driver_version),
                RimKind.VBIOS: (vbios_id, report.opaque.vbios_version)}
    verified: dict[RimKind, VerifiedRim] = {}
    for kind, (rim_id, version) in expected.items():
        xml = _rim_xml(device, kind, rim_id, trust)
        if isinstance(xml, FetchFailed):
            verified[kind] = VerifiedRim(kind, None, [failed(f"gpu.{kind}-rim.fetch", xml.explain())])
        elif xml is not None:
            verified[kind] = cached_rim(xml, kind, rim_roots, now, expected_version=version,
                                        expected_product=gpu.chip, verify=verify_rim)
    if not verified:
        return
    for kind in RimKind:
        if kind not in verified:
            verified[kind] = VerifiedRim(kind, None, [failed(f"gpu.{kind}-rim", f"no {kind} RIM "
                                                     f"({expected[kind][0]}) was available to compare with")])
    gpu.driver_rim, gpu.vbios_rim = verified[RimKind.DRIVER], verified[RimKind.VBIOS]
    gpu.checks.extend(gpu.driver_rim.checks + gpu.vbios_rim.checks)
    gpu.measurements = compare_measurements(report.blocks, gpu.driver_rim.rim if gpu.driver_rim.ok else None,
                                            gpu.vbios_rim.rim if gpu.vbios_rim.ok else None,
                                            report.opaque.nvdec0_status)
    gpu.checks.extend(gpu.measurements.checks)


def verify_ocsp(gpu: VerifiedGpu, device: DeviceEvidence, chain: Sequence[x509.Certificate],
                roots: Sequence[x509.Certificate], now: datetime) -> None:
    """Stapled OCSP answers (``ocsp-<i>`` for chain certificate i, its issuer the next one, the
    last one's the pinned root). NVIDIA checks certificates 1.. (not the leaf, not the root).
    Revoked is always refused; unknown and missing answers are for the policy to judge; an
    answer for no certificate of the chain is refused (it cannot be what it claims to be)."""
    from .types import OcspStatus
    path = [c for c in chain if c.subject != c.issuer]
    anchor = next((r for r in roots if path and r.subject == path[-1].issuer), None)
    issuers = [*path[1:], anchor]
    for label in sorted(k for k in device.endorsements if k.startswith(Endorsement.OCSP_PREFIX)):
        index = label.removeprefix(Endorsement.OCSP_PREFIX)
        if not index.isdigit() or not 0 < int(index) < len(path) or issuers[int(index)] is None:
            gpu.checks.append(failed("gpu.ocsp", f"stapled OCSP answer '{label}' is for no certificate of the chain"))
    for i in range(1, len(path)):
        cert, issuer = path[i], issuers[i]
        answer = device.endorsements.get(f"{Endorsement.OCSP_PREFIX}{i}")
        subject = cert.subject.rfc4514_string()
        if answer is None or issuer is None:
            gpu.ocsp[subject] = OcspStatus.NOT_CHECKED
            continue
        from .ocsp import check_ocsp
        status, check = check_ocsp(cert, issuer, answer, now, nonce=None)
        gpu.ocsp[subject] = status
        gpu.checks.append(check)


def _chain(device: DeviceEvidence) -> list[x509.Certificate] | Check:
    from .chain_record import read_chain
    data = device.endorsements.get(Endorsement.CHAIN)
    if data is None:
        return failed("gpu.chain", "the GPU evidence carries no device certificate chain")
    try:
        return read_chain(data)
    except EvidenceError as exc:
        return failed("gpu.chain", f"the device certificate chain cannot be read: {exc}")


def verify_device(device: DeviceEvidence, expected_nonce: bytes | None, state: Mapping[str, Any], trust: Trust,
                  now: datetime, *, roots: Sequence[x509.Certificate], rim_roots: Sequence[x509.Certificate],
                  simulated: bool, pre: Sequence[Check] = ()) -> VerifiedGpu:
    from .verify import verify_gpu_evidence
    chain = _chain(device)
    if isinstance(chain, Check):
        gpu = VerifiedGpu(device.label, [*pre, chain], simulated=simulated, state=dict(state))
    else:
        gpu = verify_gpu_evidence(device.label, device.raw, chain, expected_nonce, roots, now, simulated=simulated)
        gpu.checks[:0] = list(pre)
        gpu.state = dict(state)
        verify_rims(gpu, device, trust, rim_roots, now)
        verify_ocsp(gpu, device, chain, roots, now)
    gpu.checks = _renamed(gpu.checks, device.label)
    return gpu


def _measurement_word(gpu: VerifiedGpu) -> str:
    if gpu.measurements is None:
        return "not compared (no RIMs)"
    if not any(r is not None and r.ok for r in (gpu.driver_rim, gpu.vbios_rim)):
        return "not compared (no valid RIM)"
    return "match" if gpu.measurements.ok else "mismatch"


def summary(gpu: VerifiedGpu, kind: str) -> dict[str, Any]:
    return {
        "type": kind, "family": FAMILY, "simulated": gpu.simulated, "architecture": gpu.arch, "chip": gpu.chip,
        "ueid": gpu.ueid, "driver": gpu.driver_version, "vbios": gpu.vbios_version,
        "fwid": gpu.report.opaque.fwid.hex() if gpu.report and gpu.report.opaque.fwid else None,
        # said plainly when nothing was compared (no RIMs given or stapled)
        "measurements": _measurement_word(gpu),
        "cc": gpu.state.get("cc"), "devtools": gpu.state.get("devtools"),
        "root_sha256": gpu.root_sha256 if gpu.simulated else None,
        "rim_root_sha256": gpu.rim_root_sha256 if gpu.simulated else None,
    }


class NvidiaGpu:
    """A genuine NVIDIA GPU: NVIDIA's Device Identity and RIM roots, shipped and pinned."""

    name: ClassVar[str] = "nvidia-gpu"
    aliases: ClassVar[tuple[str, ...]] = ("nvidia",)
    family: ClassVar[str] = FAMILY
    media_type: ClassVar[str] = MEDIA_TYPE
    simulated: ClassVar[bool] = False
    policy_sections = (NVIDIA_GPU_POLICY,)

    @classmethod
    def verify(cls, device: DeviceEvidence, expected_nonce: bytes | None, state: Mapping[str, Any], trust: Trust,
               now: datetime) -> VerifiedGpu:
        from .certs import device_identity_root
        from .rim_verify import shipped_rim_root
        return verify_device(device, expected_nonce, state, trust, now, roots=[device_identity_root()],
                             rim_roots=[shipped_rim_root()], simulated=False)

    @classmethod
    def appraise(cls, verified: list[VerifiedGpu], policy: Policy) -> list[Check]:
        return appraise_gpus(verified, policy.sections.get(NVIDIA_GPU_POLICY.key), policy)

    @classmethod
    def summary(cls, verified: VerifiedGpu) -> dict[str, Any]:
        return summary(verified, cls.name)

    @classmethod
    def reference_ids(cls, device: DeviceEvidence) -> list[str]:
        """The RIM IDs the report names (driver, VBIOS) that the evidence does not staple."""
        from .abi import parse_report, rim_ids
        from .certs import arch_of, chip_name, leaf_fwid
        if all(label in device.endorsements for label in Endorsement.RIM_LABELS.values()):
            return []
        try:
            report = parse_report(device.raw)
            chain = _chain(device)
            if isinstance(chain, Check):
                return []
            arch = arch_of(chip_name(chain), leaf_fwid(chain[0])[1])
            return list(rim_ids(report, arch)) if arch is not None else []
        except (EvidenceError, *X509_ERRORS):
            return []  # nothing to fetch for evidence that does not parse; verification says why

    @classmethod
    def describe(cls, device: DeviceEvidence) -> dict[str, Any]:
        from .abi import parse_report
        try:
            report = parse_report(device.raw)
        except EvidenceError as exc:
            return {"error": str(exc)}
        o = report.opaque
        return {"request_nonce": report.request_nonce.hex(), "driver": o.driver_version, "vbios": o.vbios_version,
                "project": o.project, "project_sku": o.project_sku, "chip_sku": o.chip_sku, "chip_info": o.chip_info,
                "fwid": o.fwid.hex() if o.fwid else None, "blocks": len(report.blocks)}


def _pinned_root(device: DeviceEvidence, label: str, trust: Trust, what: str) -> tuple[list[x509.Certificate], Check]:
    der = device.endorsements.get(label)
    if der is None:
        return [], failed(f"gpu.{label}", f"simulated GPU evidence carries no {what}")
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return [], failed(f"gpu.{label}", f"the simulated {what} cannot be read")
    fp = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    if fp in trust.simulated_roots:
        return [cert], passed(f"gpu.{label}", f"simulated {what} {fp} is pinned by the policy")
    return [], failed(f"gpu.{label}", f"simulated {what} {fp} is not pinned (simulated.root_sha256)")


class SimNvidiaGpu(NvidiaGpu):
    """The simulated GPU (``ratls.platforms.nvidia.sim``): same verify path, its own pinned roots."""

    name: ClassVar[str] = "sim-nvidia-gpu"
    aliases: ClassVar[tuple[str, ...]] = ("sim-nvidia",)
    media_type: ClassVar[str] = SIM_MEDIA_TYPE
    simulated: ClassVar[bool] = True

    @classmethod
    def verify(cls, device: DeviceEvidence, expected_nonce: bytes | None, state: Mapping[str, Any], trust: Trust,
               now: datetime) -> VerifiedGpu:
        roots, root_check = _pinned_root(device, Endorsement.ROOT, trust, "GPU device root")
        rim_roots, rim_check = _pinned_root(device, Endorsement.RIM_ROOT, trust, "RIM root")
        gpu = verify_device(device, expected_nonce, state, trust, now, roots=roots, rim_roots=rim_roots,
                            simulated=True, pre=[root_check, rim_check])
        if roots:
            gpu.root_sha256 = hashlib.sha256(roots[0].public_bytes(serialization.Encoding.DER)).hexdigest()
        if rim_roots:
            gpu.rim_root_sha256 = hashlib.sha256(rim_roots[0].public_bytes(serialization.Encoding.DER)).hexdigest()
        return gpu
