from __future__ import annotations

from collections.abc import Iterator

import pytest

from triton_backend.demo import demo_repository
from triton_backend.launch import TritonConfig, TritonProcess


@pytest.fixture(scope="session")
def triton() -> Iterator[TritonProcess]:
    """The real bundled tritonserver serving the demo repository on free loopback ports."""
    with TritonProcess(TritonConfig(demo_repository())) as proc:
        yield proc
