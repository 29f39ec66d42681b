"""README's benchmark command, run as written (what it measures is read by people, never
asserted: speed is not a test verdict; the run must work and report every scenario)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from .stack import PROJECT

pytestmark = pytest.mark.slow


def test_make_bench_hardening_runs_as_written() -> None:
    if not (shutil.which("wrk") and shutil.which("h2load")):
        pytest.skip("wrk and h2load (Debian: wrk, nghttp2-client) are not installed; .ci/run installs them")
    result = subprocess.run(["make", "bench-hardening"], cwd=PROJECT, capture_output=True, text=True, timeout=900,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for scenario in ("http_small", "http_2mib", "grpc_small"):
        assert re.search(rf"^\s+{scenario}\s+\d+\s+\d+\s+[\d.]+\s+[\d.]+$", result.stdout, re.M), result.stdout
    doc = json.loads((PROJECT / "bench" / "results" / "latest.hardening.json").read_text())
    for scenario in ("http_small", "http_2mib", "grpc_small"):
        row = doc[scenario]
        assert row["hardened_rps"] > 0 and row["unhardened_rps"] > 0
        assert row["ratio"] == pytest.approx(row["hardened_rps"] / row["unhardened_rps"])
        assert all(v > 0 for v in row["envoy_cpu_us_per_req"].values())


def test_make_bench_runs_as_written() -> None:
    if not (shutil.which("wrk") and shutil.which("h2load")):
        pytest.skip("wrk and h2load (Debian: wrk, nghttp2-client) are not installed; .ci/run installs them")
    result = subprocess.run(["make", "bench"], cwd=PROJECT, capture_output=True, text=True, timeout=1800,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "== data plane (wrk / h2load / openssl s_time at saturation" in result.stdout, result.stdout[-2000:]
    doc = json.loads((PROJECT / "bench" / "results" / "latest.json").read_text())["data_plane"]
    rows = {(r["target"], r["scenario"], r["connections"]): r for r in doc["rows"]}
    cells = [("health", 16), ("http_2mib", 16), ("handshake_full", 4), ("conn_per_request", 16)] + [
        (sc, c) for sc in ("http_small", "grpc_small") for c in doc["sweep"]]
    for scenario, connections in cells:
        for target in ("envoy", "gateway", "gateway_nofilters"):
            row = rows[(target, scenario, connections)]
            assert row["rps"] > 0 and len(row["rounds"]) == doc["rounds"] and row["server_cpu_us_per_req"] > 0
            assert f"   {target:17} {scenario:16} {connections:5d} " in result.stdout
    for target in ("envoy", "gateway", "gateway_tdx"):
        # what the server did, from its own counters: s_time makes full handshakes, wrk's
        # reconnecting clients resume (with the gateway's own ticket keys, for the gateway)
        assert rows[(target, "handshake_full", 4)]["resumed_share"] == 0
        assert rows[(target, "conn_per_request", 16)]["resumed_share"] > 0.5
    certs = doc["certificates"]
    assert certs["gateway_tdx"]["der_bytes"] > certs["gateway"]["der_bytes"] > certs["envoy"]["der_bytes"]
    assert all(0 < c["brotli_bytes"] < c["der_bytes"] for name, c in certs.items() if name != "envoy")
    assert set(doc["latency_view"]) == {"envoy", "gateway"} and doc["rotation_seconds_median"] > 0
    assert (PROJECT / "bench" / "results" / "latest.md").read_text().startswith("| target | scenario |")


def test_make_bench_attribution_runs_as_written() -> None:
    if not (shutil.which("wrk") and shutil.which("h2load")):
        pytest.skip("wrk and h2load (Debian: wrk, nghttp2-client) are not installed; .ci/run installs them")
    result = subprocess.run(["make", "bench-attribution"], cwd=PROJECT, capture_output=True, text=True,
                            timeout=1200, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    from bench.attribution_bench import VARIANTS

    doc = json.loads((PROJECT / "bench" / "results" / "latest.attribution.json").read_text())
    names = [row["variant"] for row in doc["rows"]]
    assert names == ["plain Envoy", "default policy", "filters off", *VARIANTS]
    for row in doc["rows"]:
        for scenario in ("health", "http_small"):
            assert row[scenario]["rps"] > 0 and row[scenario]["cpu_us_per_req"] > 0
        assert re.search(rf"^\s+{re.escape(row['variant'])}\s+\d+\s+[+-][\d.]+\s+\d+\s+[+-][\d.]+$", result.stdout,
                         re.M), result.stdout
    default = next(r for r in doc["rows"] if r["variant"] == "default policy")
    assert default["health"]["cpu_vs_default"] == 0 and default["http_small"]["cpu_vs_default"] == 0
