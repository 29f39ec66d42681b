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
    base = results["snp_verify_uncached"]["median_ms"]  # type: ignore[index]
    for key in ("snp_verify_cached", "ratls_cert_verify_cached"):
        results[key]["ratio_vs_uncached"] = results[key]["median_ms"] / base  # type: ignore[index]
    return results
