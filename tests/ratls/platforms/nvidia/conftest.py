"""Fixtures for the NVIDIA GPU tests: the NVIDIA vendor vectors (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def nvidia_vectors(vectors: Path) -> Path:
    path = vectors / "nvidia"
    if not path.is_dir():
        pytest.skip(f"NVIDIA test vectors not found at {path}")
    return path
