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

from bench import attribution_bench, hardening_bench, manifest_bench, native_bench, verify_bench  # noqa: E402

SCENARIO_TEXT = {"health": "GET /v2/health/ready", "http_small": "small infer, HTTP/1.1",
                 "http_2mib": "2 MiB infer, HTTP/1.1", "grpc_small": "small infer, gRPC",
                 "handshake_full": "full TLS handshakes", "conn_per_request": "new connection per request"}


def _ratio(row: dict[str, object], key: str) -> str:
    value = row.get(key)
    return f"{value:.3f}" if isinstance(value, float) else "-"


def data_plane_report(dp: dict) -> list[str]:
    """Print the native data-plane table; return it as Markdown for latest.md."""
    print(f"\n== data plane (wrk / h2load / openssl s_time at saturation; {dp['rounds']} interleaved rounds of "
          f"{dp['seconds']:g} s, medians; ratios against plain Envoy TLS and nginx from this run)")
    head = (f"   {'target':17} {'scenario':16} {'conns':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'CPU us/req':>10} {'vs envoy':>8} {'vs nginx':>8} {'p50 vs envoy':>12}")
    print(head)
    lines = ["| target | scenario | connections | req/s | p50 ms | p99 ms | proxy CPU µs/req | vs plain Envoy | "
             "vs nginx | p50 vs Envoy | resumed |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in sorted(dp["rows"], key=lambda r: (list(SCENARIO_TEXT).index(r["scenario"]), r["connections"])):
        resumed = f"{row['resumed_share']:.2f}" if "resumed_share" in row else "-"
        print(f"   {row['target']:17} {row['scenario']:16} {row['connections']:5d} {row['rps']:8.0f} "
              f"{row['p50_ms']:7.2f} {row['p99_ms']:7.2f} {row['server_cpu_us_per_req']:10.0f} "
              f"{_ratio(row, 'vs_envoy'):>8} {_ratio(row, 'vs_nginx'):>8} {_ratio(row, 'p50_vs_envoy'):>12}")
        lines.append(f"| {row['target']} | {SCENARIO_TEXT[row['scenario']]} | {row['connections']} | "
                     f"{row['rps']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                     f"{row['server_cpu_us_per_req']:.0f} | "
                     f"{_ratio(row, 'vs_envoy')} | {_ratio(row, 'vs_nginx')} | {_ratio(row, 'p50_vs_envoy')} | "
                     f"{resumed} |")
    certs = "; ".join(f"{name} {c['der_bytes']} B ({c['brotli_bytes']} B brotli)"
                      for name, c in dp["certificates"].items())
    print(f"   certificates (DER, and brotli-compressed as RFC 8879 sends them): {certs}")
    lat = "; ".join(f"{name}: HTTP {v['http_small_p50_ms']:.2f} ms, gRPC {v['grpc_small_p50_ms']:.2f} ms"
                    for name, v in dp["latency_view"].items())
    print(f"   latency view (one Python client, p50): {lat}")
    print(f"   rotation (new evidence + certificate + SDS push + Envoy ACK): "
          f"{dp['rotation_seconds_median'] * 1000:.0f} ms median")
    return lines + ["", f"Certificates (DER, and brotli as RFC 8879 sends them): {certs}", "",
                    f"Latency view (one Python client at a time, p50): {lat}"]


def main() -> int:
    if "--hardening" in sys.argv[1:]:
        return hardening_bench.main()
    if "--attribution" in sys.argv[1:]:
        return attribution_bench.main()
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
    data_plane = native_bench.run()
    results["data_plane"] = data_plane
    if "skipped" in data_plane:
        print(f"\n== data plane: skipped ({data_plane['skipped']})")
        lines: list[str] = []
    else:
        lines = data_plane_report(data_plane)
    (out_dir / "latest.md").write_text("\n".join(lines) + "\n")
    path = out_dir / "latest.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
