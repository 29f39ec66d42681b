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
