"""Model-manifest hashing throughput (MB/s) against raw hashlib SHA-256 over the same bytes,
measured in the same run."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from triton_backend.manifest import build_manifest

SIZE_MB = 256


def run(size_mb: int = SIZE_MB) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        (repo / "big" / "1").mkdir(parents=True)
        (repo / "big" / "config.pbtxt").write_text('name: "big"\n')
        weights = repo / "big" / "1" / "model.bin"
        block = os.urandom(1 << 20)
        with open(weights, "wb") as f:
            for _ in range(size_mb):
                f.write(block)
        build_manifest(repo)  # warm the page cache so both sides read from memory
        start = time.perf_counter()
        build_manifest(repo)
        manifest_s = time.perf_counter() - start
        data = weights.read_bytes()
        start = time.perf_counter()
        hashlib.sha256(data).digest()
        raw_s = time.perf_counter() - start
    manifest_mbps = size_mb / manifest_s
    raw_mbps = size_mb / raw_s
    return {"size_mb": size_mb, "manifest_mb_per_s": manifest_mbps, "raw_sha256_mb_per_s": raw_mbps,
            "ratio_vs_raw_sha256": manifest_mbps / raw_mbps}
