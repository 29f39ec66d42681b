from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

# The instants at which each vector's collateral is current (see the vectors' README).
DCAP_V4_NOW = datetime.fromtimestamp(1752919234, UTC)
DCAP_V5_NOW = datetime.fromtimestamp(1774003274, UTC)
GO_V4_NOW = datetime.fromtimestamp(1688173200, UTC)


@pytest.fixture(scope="session")
def tdx_vectors(vectors: Path) -> Path:
    path = vectors / "tdx"
    if not path.is_dir():
        pytest.skip(f"TDX vectors not found at {path}")
    return path
