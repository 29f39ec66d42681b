"""Fixtures for the library and CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_local_simulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Commands that look for the local simulated root (`ratls policy init`, `ratls sim root`)
    # must not read or create state in the developer's home: point them at an empty directory.
    state = tmp_path / "local-sim-state"
    monkeypatch.setenv("RATLS_SIM_DIR", str(state))
    return state
