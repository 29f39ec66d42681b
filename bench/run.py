"""`make bench`: run every benchmark, print a table, write bench/results/latest.json.

The machines this runs on are shared and noisy: read the ratios (each against a baseline
measured in the same run), not the absolute numbers."""

from __future__ import annotations

import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import gateway_bench, hardening_bench, manifest_bench, verify_bench  # noqa: E402


def filters_main() -> int:
    """`make bench-filters`: only the filter cost, with more interleaved rounds."""
    result = gateway_bench.filters_only()["filters_cost_interleaved"]
    for scenario, row in result.items():
        print(f"{scenario}: filters on/off over {row['rounds']} interleaved rounds (medians): req/s "
              f"{row['rps_ratio']:.3f}, Envoy CPU per request {row['envoy_cpu_per_request_ratio']:.3f}")
    return 0


def main() -> int:
    if "--filters" in sys.argv[1:]:
        return filters_main()
    if "--hardening" in sys.argv[1:]:
        return hardening_bench.main()
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    results: dict[str, object] = {"when": datetime.now(UTC).isoformat(), "python": platform.python_version(),
                                  "machine": platform.machine()}
    print("== verification (per call)")
    verify = verify_bench.run()
    results["verify"] = verify
    print(f"   evidence: {verify['source']}")
    print(f"   {'case':32} {'median ms':>10} {'p99 ms':>10} {'vs uncached':>12}")
    for key in ("snp_verify_uncached", "snp_verify_cached", "ratls_cert_verify_cached", "tdx_quote_verify",
                "sim_tdx_cert_verify", *verify_bench.GPU_CASES):
        if key not in verify:
            continue
        row = verify[key]
        ratio = row.get("ratio_vs_uncached", 1.0)
        print(f"   {key:32} {row['median_ms']:10.3f} {row['p99_ms']:10.3f} {ratio:12.2f}")
    print(f"   GPU: {verify['gpu_source']}; CPU + 8 GPUs certificate {verify['cpu_8gpu_cert_bytes']} B DER")
    print("\n== model-manifest hashing")
    manifest = manifest_bench.run()
    results["manifest"] = manifest
    print(f"   {manifest['size_mb']} MiB: manifest {manifest['manifest_mb_per_s']:.0f} MB/s, raw sha256 "
          f"{manifest['raw_sha256_mb_per_s']:.0f} MB/s, ratio {manifest['ratio_vs_raw_sha256']:.2f}")
    print("\n== data plane (same Triton; best of rounds; ratios against plain Envoy TLS)")
    gw = gateway_bench.run()
    results["data_plane"] = gw
    print(f"   certificate: gateway {gw['gateway_cert_bytes']} B vs plain {gw['plain_cert_bytes']} B DER")
    print(f"   {'target':8} {'scenario':11} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms/req':>11} "
          f"{'vs envoy':>9}")
    lines = ["| target | scenario | req/s | p50 ms | p99 ms | server CPU ms/req | ratio vs plain Envoy |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for target, rows in gw["targets"].items():
        for scenario, row in rows.items():
            ratio = gw["rps_ratio_vs_plain_envoy"][target].get(scenario, float("nan"))
            print(f"   {target:8} {scenario:11} {row['rps']:9.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} "
                  f"{row['server_cpu_ms_per_req']:11.3f} {ratio:9.3f}")
            lines.append(f"| {target} | {scenario} | {row['rps']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                         f"{row['server_cpu_ms_per_req']:.3f} | {ratio:.3f} |")
    print("   default filters vs filters off (req/s ratio): " + ", ".join(
        f"{k} {v:.3f}" for k, v in gw["filters_cost_ratio"].items()))
    lines.append("")
    lines.append("Default filter policy vs the same gateway with filters off (req/s ratio): " + ", ".join(
        f"{k} {v:.3f}" for k, v in gw["filters_cost_ratio"].items()))
    inter = gw["filters_cost_interleaved"]
    text = "; ".join(f"{k}: req/s {v['rps_ratio']:.3f}, Envoy CPU per request {v['envoy_cpu_per_request_ratio']:.3f}"
                     for k, v in inter.items())
    print(f"   filters on/off, {inter['http_small']['rounds']} interleaved rounds, medians: {text}")
    lines.append("")
    lines.append(f"Filters on/off, interleaved rounds, medians: {text}")
    print(f"   rotation (new evidence + certificate + SDS push + Envoy ACK): "
          f"{gw['rotation_seconds_median'] * 1000:.0f} ms median")
    tdx = gw["tdx_handshakes"]
    text = (f"TDX certificate ({tdx['tdx_cert_bytes']} B, quote + collateral) handshakes/s vs the SNP-format one "
            f"({gw['gateway_cert_bytes']} B): {tdx['ratio']:.3f} (medians of {tdx['rounds']} interleaved rounds)")
    print(f"   {text}")
    lines.append("")
    lines.append(text)
    print()
    hardening = hardening_bench.run()
    results["hardening"] = hardening
    if "skipped" in hardening:
        print(f"== hardening cost: skipped ({hardening['skipped']})")
    else:
        text = "; ".join(f"{sc} {hardening[sc]['ratio']:.3f} ({hardening[sc]['hardened_rps']:.0f} vs "
                         f"{hardening[sc]['unhardened_rps']:.0f} req/s)"
                         for sc in ("http_small", "http_2mib", "grpc_small"))
        print(f"== hardening cost (wrk/h2load, {hardening['connections']} connections, {hardening['rounds']} "
              f"interleaved rounds, medians; hardened / unhardened req/s): {text}")
        lines.append("")
        lines.append(f"DoS hardening, hardened / unhardened gateway req/s (wrk, h2load at {hardening['connections']} "
                     f"connections, {hardening['rounds']} interleaved rounds, medians): {text}")
    (out_dir / "latest.md").write_text("\n".join(lines) + "\n")
    path = out_dir / "latest.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
