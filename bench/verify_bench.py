"""Verification cost: SEV-SNP report verification (real Genoa vector, or the simulated chain
when the vectors are absent) with and without the certificate-signature cache, and a full
RA-TLS certificate verification. Figures are per verification, medians of repeated runs,
and reported as ratios against the uncached baseline measured in the same run."""

from __future__ import annotations

import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from ratls.cert import generate_key
from ratls.evidence import Evidence
from ratls.issue import issue_certificate
from ratls.pipeline import verify_certificate, verify_evidence
from ratls.platforms.sim.chain import generate_chain
from ratls.platforms.sim.platform import SimPlatform
from ratls.platforms.snp.platform import MEDIA_TYPE
from ratls.platforms.snp.verify import SignatureCache
from ratls.policy import parse_policy
from ratls.trust import Trust

GPU_CASES = ("gpu_verify_cold", "gpu_verify_cached", "cpu_8gpu_cert_cold", "cpu_8gpu_cert_cached")


def _time(fn, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": statistics.median(ordered), "p99_ms": ordered[int(len(ordered) * 0.99) - 1],
            "n": len(ordered)}


def _tdx_cases(vectors: Path, repeat: int) -> dict[str, object]:
    """A real TDX quote with its collateral (our checks plus dcap-qvl), and a full certificate
    verification on the simulated TDX platform, against the same uncached SNP baseline."""
    from ratls.platforms.sim.tdx_platform import SimTdxPlatform
    from ratls.platforms.tdx.platform import COLLATERAL_LABEL
    from ratls.platforms.tdx.platform import MEDIA_TYPE as TDX_MEDIA

    out: dict[str, object] = {}
    quote_dir = vectors / "tdx" / "v4_dcap-qvl"
    if (quote_dir / "quote.bin").is_file():
        evidence = Evidence("tdx", TDX_MEDIA, (quote_dir / "quote.bin").read_bytes(),
                            {COLLATERAL_LABEL: (quote_dir / "collateral.json").read_bytes()})
        at = datetime.fromtimestamp(1752919234, UTC)

        def tdx() -> None:
            assert verify_evidence(evidence, policy=None, now=at).ok

        out["tdx_quote_verify"] = _stats(_time(tdx, repeat))
    import tempfile

    with tempfile.TemporaryDirectory() as state:
        platform = SimTdxPlatform(state_dir=Path(state))
        now = datetime.now(UTC)
        cert = issue_certificate(platform, generate_key(), now=now).cert
        policy = parse_policy({"version": 1, "allow_simulated": True,
                               "simulated": {"root_sha256": platform.chain.root_sha256},
                               "tdx": {"mrtd": [platform.chain.mrtd.hex()]}})

        def sim_tdx() -> None:
            assert verify_certificate(cert, policy=policy, now=now)[0].ok

        out["sim_tdx_cert_verify"] = _stats(_time(sim_tdx, repeat))
    return out


def _clear_gpu_caches() -> None:
    from ratls.platforms.nvidia import verify_cache
    verify_cache.clear()


def _gpu_cases(vectors: Path, repeat: int) -> dict[str, object]:
    """One GPU (report + device chain + driver and VBIOS RIMs: NVIDIA's real go-nvtrust evidence
    with its test RIMs, or the simulated GPU without the vectors), and a certificate with the
    simulated CPU and 8 simulated GPUs; cold (every cache emptied before each call) and cached."""
    import tempfile

    from ratls.devices import DeviceEvidence
    from ratls.platforms.nvidia.collector import SimGpuCollector
    from ratls.platforms.nvidia.device import MEDIA_TYPE as GPU_MEDIA
    from ratls.platforms.nvidia.device import NvidiaGpu, SimNvidiaGpu
    from ratls.platforms.nvidia.sim import load_or_create

    out: dict[str, object] = {}
    go, rims = vectors / "nvidia" / "go-nvtrust", vectors / "nvidia" / "nv-local-gpu-verifier-2.7.3" / "rims"
    with tempfile.TemporaryDirectory() as state:
        gpu = load_or_create(Path(state))
        if (go / "attestationReport.txt").is_file():
            device = DeviceEvidence("gpu0", GPU_MEDIA, (go / "attestationReport.txt").read_bytes(), {
                "chain": (go / "gpuAkCertChain.txt").read_bytes(),
                "driver-rim": (rims / "Driver_RIM_test_no_gpu.swidtag").read_bytes(),
                "vbios-rim": (rims / "1010_0200_882_96005E0001_test_no_gpu.swidtag").read_bytes()})
            nonce = bytes.fromhex("4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e")
            kind, trust, at = NvidiaGpu, Trust(), datetime(2024, 6, 1, tzinfo=UTC)
            out["gpu_source"] = "NVIDIA H100 report + chain + test RIMs (go-nvtrust, nv-local-gpu-verifier)"
        else:
            nonce = bytes(32)
            device = SimGpuCollector(Path(state), 1).collect(lambda _label: nonce)[0].evidence
            device = DeviceEvidence("gpu0", device.media_type, device.raw, {**device.endorsements, **{
                ("driver-rim" if "DRIVER" in k else "vbios-rim"): v for k, v in gpu.rims_by_id().items()}})
            kind, at = SimNvidiaGpu, datetime.now(UTC)
            trust = Trust(simulated_roots=(gpu.root_sha256, gpu.rim_root_sha256))
            out["gpu_source"] = "simulated GPU (vectors absent)"

        def one_gpu() -> None:
            verified = kind.verify(device, nonce, {}, trust, at)
            assert verified.authentic and verified.measurements is not None and verified.measurements.ok

        def one_gpu_cold() -> None:
            _clear_gpu_caches()
            one_gpu()

        out["gpu_verify_cold"] = _stats(_time(one_gpu_cold, repeat))
        one_gpu()
        out["gpu_verify_cached"] = _stats(_time(one_gpu, repeat))
        out.update(_eight_gpus(Path(state), gpu, repeat))
    return out


def _eight_gpus(state: Path, gpu: object, repeat: int) -> dict[str, object]:
    from ratls.platforms.nvidia.collector import SimGpuCollector
    chain, now = generate_chain(), datetime.now(UTC)
    cert = issue_certificate(SimPlatform(chain=chain), generate_key(), now=now,
                             devices=SimGpuCollector(state, 8)).cert
    trust = Trust(simulated_roots=(chain.root_sha256, gpu.root_sha256, gpu.rim_root_sha256),  # type: ignore[attr-defined]
                  device_references=gpu.rims_by_id())  # type: ignore[attr-defined]

    def eight() -> None:
        appraisal, _ = verify_certificate(cert, policy=None, now=now, trust=trust)
        assert appraisal.ok and len(appraisal.devices) == 8

    def eight_cold() -> None:
        _clear_gpu_caches()
        eight()

    from cryptography.hazmat.primitives.serialization import Encoding
    return {"cpu_8gpu_cert_cold": _stats(_time(eight_cold, max(20, repeat // 4))),
            "cpu_8gpu_cert_cached": _stats(_time(eight, max(20, repeat // 4))),
            "cpu_8gpu_cert_bytes": len(cert.public_bytes(Encoding.DER))}


def run(repeat: int = 200) -> dict[str, object]:
    now = datetime.now(UTC)
    vectors = Path(os.environ.get("RATLS_VECTORS", Path(__file__).resolve().parents[2] / "shared" / "vectors"))
    report = vectors / "snp" / "genoa_v3_azure_trustee" / "report.bin"
    chain = generate_chain()
    if report.is_file():
        vcek = (report.parent / "vcek.pem").read_bytes()
        evidence = Evidence("sev-snp", MEDIA_TYPE, report.read_bytes(), {"vcek": vcek})
        source = "real Genoa report (vectors)"
        base_trust = Trust()
        at = datetime(2026, 11, 1, tzinfo=UTC)
    else:
        platform = SimPlatform(chain=chain)
        evidence = platform.collect(bytes(64))
        source = "simulated chain (vectors absent)"
        base_trust = Trust(simulated_roots=(chain.root_sha256,))
        at = now

    def uncached() -> None:
        trust = Trust(simulated_roots=base_trust.simulated_roots, signature_cache=False)
        assert verify_evidence(evidence, policy=None, now=at, trust=trust).ok

    shared = SignatureCache()

    def cached() -> None:
        trust = Trust(simulated_roots=base_trust.simulated_roots, signature_cache=shared)
        assert verify_evidence(evidence, policy=None, now=at, trust=trust).ok

    cert = issue_certificate(SimPlatform(chain=chain), generate_key(), now=now).cert
    policy = parse_policy({"version": 1, "allow_simulated": True, "simulated": {"root_sha256": chain.root_sha256},
                           "sev-snp": {"measurements": [chain.measurement.hex()]}})

    def full_cert() -> None:
        trust = Trust(signature_cache=shared)
        assert verify_certificate(cert, policy=policy, now=now, trust=trust)[0].ok

    cached()  # warm the cache
    results = {
        "source": source,
        "snp_verify_uncached": _stats(_time(uncached, repeat)),
        "snp_verify_cached": _stats(_time(cached, repeat)),
        "ratls_cert_verify_cached": _stats(_time(full_cert, repeat)),
    }
    results.update(_tdx_cases(vectors, repeat))
    results.update(_gpu_cases(vectors, repeat // 2))
    base = results["snp_verify_uncached"]["median_ms"]  # type: ignore[index]
    for key in ("snp_verify_cached", "ratls_cert_verify_cached", "tdx_quote_verify", "sim_tdx_cert_verify",
                *GPU_CASES):
        if key not in results:
            continue
        results[key]["ratio_vs_uncached"] = results[key]["median_ms"] / base  # type: ignore[index]
    return results
