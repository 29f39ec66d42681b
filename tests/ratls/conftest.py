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


@pytest.fixture
def cert(tmp_path: Path, sim_state: Path) -> Path:
    """A certificate issued on the session's simulated chain (key beside it, k.pem)."""
    from ratls.cli import main

    path = tmp_path / "c.pem"
    assert main(["cert", "issue", "--platform", "sim", "--sim-dir", str(sim_state), "--out-cert", str(path),
                 "--out-key", str(tmp_path / "k.pem")]) == 0
    return path
