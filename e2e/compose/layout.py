"""Lay the nvidia-pytriton wheel's Triton out as the NGC image has it (run at image build)."""

import importlib.util
import shutil
import sys
from pathlib import Path

spec = importlib.util.find_spec("pytriton")  # found, not imported: its __init__ is heavy
assert spec is not None and spec.submodule_search_locations
wheel = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
libs = wheel.parent.parent / "nvidia_pytriton.libs"
target = Path("/opt/tritonserver")
backend = target / "backends" / "python"
backend.mkdir(parents=True)
for item in (wheel / "backends" / "python").iterdir():
    if item.is_file():
        shutil.copy2(item, backend / item.name)
version = f"{sys.version_info.major}.{sys.version_info.minor}"
shutil.copy2(wheel / "python_backend_stubs" / version / "triton_python_backend_stub", backend)
bin_dir = target / "bin"
bin_dir.mkdir()
launcher = bin_dir / "tritonserver"
# exec: tritonserver itself is the container's process, as in the NGC image
launcher.write_text(f'#!/bin/sh\nexport LD_LIBRARY_PATH="{libs}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"\n'
                    f'exec {wheel}/bin/tritonserver "$@"\n')
launcher.chmod(0o755)
