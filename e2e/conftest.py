from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .stack import Stack, pids_alive, start_stack


@pytest.fixture(scope="session")
def stack(sim_state: Path) -> Iterator[Stack]:
    """One real gateway (Triton + Envoy + control plane) shared by the non-destructive tests."""
    s = start_stack(sim_dir=sim_state)
    status = s.status()
    children = [p for p in (status["envoy"]["pid"], status["triton"]["pid"]) if p]
    yield s
    assert s.stop() == 0, s.log()[-3000:]
    assert pids_alive(children) == [], "Envoy or Triton outlived the gateway"


@pytest.fixture(scope="session")
def sim_policy(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A policy pinning the simulated root and measurement (what a user writes for sim)."""
    from ratls.platforms.sim.chain import load_chain

    chain = load_chain(stack.sim_dir)
    path = tmp_path_factory.mktemp("policy") / "sim-policy.yaml"
    path.write_text(
        "version: 1\nplatforms: []\nallow_simulated: true\n"
        f"simulated: {{root_sha256: {chain.root_sha256}}}\n"
        f"sev-snp:\n  measurements: ['{chain.measurement.hex()}']\n"
        "  guest_policy: {debug: false, migrate_ma: false}\n  vmpl: 0\n"
        "claims:\n  max_age: 24h\n")
    return path
