"""Shared fixtures: the vendor vectors (skipped with a message when absent) and a
simulated SNP chain generated once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ratls.platforms.sim.chain import SimChain, generate_chain, save_chain

PROJECT = Path(__file__).resolve().parent


def vectors_dir() -> Path:
    return Path(os.environ.get("RATLS_VECTORS", PROJECT.parent / "shared" / "vectors"))


@pytest.fixture(scope="session")
def vectors() -> Path:
    path = vectors_dir()
    if not (path / "snp").is_dir():
        pytest.skip(f"vendor test vectors not found at {path} (set RATLS_VECTORS to their directory)")
    return path


@pytest.fixture(scope="session")
def sim_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("sim-state")
    save_chain(generate_chain(), state)
    return state


@pytest.fixture(scope="session")
def sim_chain(sim_state: Path) -> SimChain:
    from ratls.platforms.sim.chain import load_chain

    return load_chain(sim_state)


@pytest.fixture(scope="session")
def sim_tdx_chain():  # type: ignore[no-untyped-def]
    from ratls.platforms.sim.tdx_chain import generate_tdx_chain

    return generate_tdx_chain()
