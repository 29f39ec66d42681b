"""Fixtures for the NVIDIA GPU tests: the NVIDIA vendor vectors (skipped when absent)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

# The instant the shared vectors' expected results were computed at (device certificates run
# to 9999, so any time after 2023 gives the same verdicts).
VECTORS_NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def nvidia_vectors(vectors: Path) -> Path:
    path = vectors / "nvidia"
    if not path.is_dir():
        pytest.skip(f"NVIDIA test vectors not found at {path}")
    return path
