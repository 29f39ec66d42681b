"""Location of the demo model repository shipped with the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any


def demo_repository() -> Path:
    return Path(str(resources.files("triton_backend") / "demo_models"))


def add_sub_inputs(module: Any, a: list[float], b: list[float]) -> list[Any]:
    """INPUT0/INPUT1 for the demo add_sub model, built with a tritonclient module (http or grpc)."""
    import numpy as np

    x = module.InferInput("INPUT0", [len(a)], "FP32")
    x.set_data_from_numpy(np.array(a, dtype=np.float32))
    y = module.InferInput("INPUT1", [len(b)], "FP32")
    y.set_data_from_numpy(np.array(b, dtype=np.float32))
    return [x, y]


def repeat_inputs(module: Any, count: int, message: bytes) -> list[Any]:
    """COUNT/MESSAGE for the decoupled demo repeat model (streams COUNT responses)."""
    import numpy as np

    n = module.InferInput("COUNT", [1], "INT32")
    n.set_data_from_numpy(np.array([count], dtype=np.int32))
    m = module.InferInput("MESSAGE", [1], "BYTES")
    m.set_data_from_numpy(np.array([message], dtype=np.object_))
    return [n, m]
