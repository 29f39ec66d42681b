"""Location of the demo model repository shipped with the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def demo_repository() -> Path:
    return Path(str(resources.files("triton_backend") / "demo_models"))
