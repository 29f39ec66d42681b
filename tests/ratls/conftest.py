"""Fixtures for the library and CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ratls.platforms.sim.chain import SimChain


@pytest.fixture(autouse=True)
def _no_local_simulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Commands that look for the local simulated root (`ratls policy init`, `ratls sim root`)
    # must not read or create state in the developer's home: point them at an empty directory.
    state = tmp_path / "local-sim-state"
    monkeypatch.setenv("RATLS_SIM_DIR", str(state))
    return state


@pytest.fixture
def policy(tmp_path: Path, sim_chain: SimChain) -> Path:
    """A policy accepting the session's simulated chain (its root and launch measurement)."""
    path = tmp_path / "p.yaml"
    path.write_text(f"version: 1\nplatforms: []\nallow_simulated: true\n"
                    f"simulated: {{root_sha256: '{sim_chain.root_sha256}'}}\n"
                    f"sev-snp: {{measurements: ['{sim_chain.measurement.hex()}']}}\n")
    return path
