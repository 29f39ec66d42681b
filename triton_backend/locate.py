"""Find a ``tritonserver`` to run: explicit path, ``PATH``, the NGC image location, or the
one shipped in the ``nvidia-pytriton`` wheel (which needs a prepared backend directory)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ratls.errors import ConfigError

NGC_ROOT = Path("/opt/tritonserver")


class TritonNotFound(ConfigError):
    """No usable tritonserver binary (a ConfigError: the operator installs one or names it)."""


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    source: str  # "config", "PATH", "ngc", "pytriton-wheel"
    backend_dir: Path | None = None  # None: Triton's built-in default
    env: dict[str, str] = field(default_factory=dict)
    wheel_root: Path | None = None  # set for the pytriton wheel: where backends and stubs live


def _wheel_root() -> Path | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    return root if (root / "bin" / "tritonserver").is_file() else None


def wheel_libs_dir() -> Path | None:
    root = _wheel_root()
    if root is None:
        return None
    libs = root.parent.parent / "nvidia_pytriton.libs"
    return libs if libs.is_dir() else None


def locate(explicit: str | Path | None = None) -> TritonInstall:
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise TritonNotFound(f"configured tritonserver {path} does not exist or is not executable",
                                 hint="check triton.binary in the gateway config")
        wheel = _wheel_root()
        if wheel is not None and path.resolve() == (wheel / "bin" / "tritonserver").resolve():
            return _wheel_install(wheel, source="config")
        return TritonInstall(path, "config")
    found = shutil.which("tritonserver")
    if found:
        return TritonInstall(Path(found), "PATH")
    ngc = NGC_ROOT / "bin" / "tritonserver"
    if ngc.is_file():
        return TritonInstall(ngc, "ngc", backend_dir=NGC_ROOT / "backends")
    wheel = _wheel_root()
    if wheel is not None:
        return _wheel_install(wheel, source="pytriton-wheel")
    raise TritonNotFound(
        "no tritonserver found (checked the configured path, PATH, /opt/tritonserver and the nvidia-pytriton wheel)",
        hint="install the server extra (it brings the nvidia-pytriton wheel) or set triton.binary")


def _wheel_install(root: Path, *, source: str) -> TritonInstall:
    libs = wheel_libs_dir()
    env = {}
    if libs is not None:
        env["LD_LIBRARY_PATH"] = str(libs)
    return TritonInstall(root / "bin" / "tritonserver", source, env=env, wheel_root=root)


def prepare_wheel_backends(install: TritonInstall, work_dir: Path) -> Path:
    """Lay out a backend directory for the wheel's Triton: the python backend plus the stub
    built for the running Python (the wheel ships one stub per Python version)."""
    if install.wheel_root is None:
        raise ValueError("not a pytriton wheel install")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = install.wheel_root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        available = sorted(p.name for p in (install.wheel_root / "python_backend_stubs").iterdir())
        raise TritonNotFound(f"the nvidia-pytriton wheel has no python backend stub for Python {version} "
                             f"(it has {', '.join(available)})",
                             hint="run the gateway with one of those Python versions, or use a tritonserver "
                                  "install (set triton.binary)")
    target = work_dir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    source = install.wheel_root / "backends" / "python"
    for item in source.iterdir():
        if item.is_file():
            shutil.copy2(item, target / item.name)
    shutil.copy2(stub, target / "triton_python_backend_stub")
    return work_dir / "backends"
