"""The compose deployment for real: a Docker engine (the running one, or our own dockerd), local
stand-ins for the registry images, the gateway image built by deploy/docker-compose.yml from the
project's Dockerfile, and the `sim` profile brought up on a free host port.

These tests run under `make e2e-compose` (RATLS_E2E_COMPOSE=1); `make test` lists them as skipped."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from triton_backend.demo import demo_repository

from ..stack import free_port
from .engine import Engine, find_running, start_own
from .images import ROOT, LocalImages, build_all

COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
# Every docker-compose command the tests ran, as README writes it (project "ratls"): README's
# compose lines are checked against this list by the last test.
RAN: list[str] = []
UP = ("up", "-d", "--build", "--always-recreate-deps")  # README's up, for every profile
DATA_ROOT = ROOT / ".cache" / "compose" / "docker"  # images persist between runs


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("RATLS_E2E_COMPOSE") == "1":
        return
    skip = pytest.mark.skip(reason="needs a Docker engine: run by `make e2e-compose`")
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@dataclass
class Compose:
    """One compose project of deploy/docker-compose.yml, driven as README gives it."""

    engine: Engine
    project: str
    profile: str
    env: dict[str, str]
    started: list[str] = field(default_factory=list)

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        cmd = ["docker-compose", "-f", str(COMPOSE_FILE), "-p", self.project, "--profile", self.profile, *args]
        RAN.append(" ".join(["docker-compose -f deploy/docker-compose.yml -p ratls --profile", self.profile, *args]))
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd[5:])} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def container(self, service: str) -> str:
        cid = self.run("ps", "-q", service).stdout.strip()
        assert cid, f"no container for {service}"
        return cid

    def inspect(self, service: str, template: str) -> str:
        return self.engine.docker("inspect", "-f", template, self.container(service)).stdout.strip()

    def pid(self, service: str) -> int:
        return int(self.inspect(service, "{{.State.Pid}}"))

    def logs(self, service: str) -> str:
        result = self.run("logs", service, check=False)  # no colours: stdout is not a terminal
        return result.stdout + result.stderr

    def wait_healthy(self, service: str, timeout: float = 180) -> float:
        start = time.monotonic()
        status = ""
        while time.monotonic() - start < timeout:
            cid = self.run("ps", "-q", service, check=False).stdout.strip()
            if cid:
                status = self.engine.docker("inspect", "-f", "{{.State.Status}} {{if .State.Health}}"
                                            "{{.State.Health.Status}}{{end}}", cid, check=False).stdout.strip()
                if status.endswith("healthy") and not status.endswith("unhealthy"):
                    return time.monotonic() - start
            time.sleep(0.5)
        raise AssertionError(f"{service} not healthy within {timeout:g}s ({status}):\n{self.logs(service)[-4000:]}")


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    running = find_running()
    own = running is None
    eng = running or start_own(DATA_ROOT)
    try:
        yield eng
    finally:
        if own:
            try:
                # rebuilt layers of earlier runs: the data root persists, keep it from growing without end
                eng.docker("image", "prune", "-f", check=False, timeout=120)
            finally:
                eng.stop()


@pytest.fixture(scope="session")
def images(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> LocalImages:
    return build_all(engine, tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def model_repository() -> Iterator[Path]:
    """The demo models, readable by the containers' users (Triton 1000, gateway 10001): pytest's
    own temporary directories are private to root."""
    parent = Path(tempfile.mkdtemp(prefix="ratls-models-"))
    repo = parent / "models"
    shutil.copytree(demo_repository(), repo, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [parent, *repo.rglob("*"), repo]:
        mode = stat.S_IMODE(path.stat().st_mode)
        path.chmod(mode | (0o755 if path.is_dir() else 0o644))
    yield repo
    shutil.rmtree(parent, ignore_errors=True)


def compose_env(engine: Engine, images: LocalImages, models: Path, port: int) -> dict[str, str]:
    return {**engine.env, **images.build_env(), "MODEL_REPOSITORY": str(models), "RATLS_PORT": str(port),
            "RATLS_IMAGE": "ratls-local/gateway:e2e"}


@pytest.fixture(scope="session")
def sim(engine: Engine, images: LocalImages, model_repository: Path) -> Iterator[Compose]:
    port = free_port()
    stack = Compose(engine, f"ratls-e2e-{os.getpid()}", "sim", compose_env(engine, images, model_repository, port))
    stack.env["RATLS_TEST_PORT"] = str(port)
    try:
        stack.run(*UP)
        stack.wait_healthy("gateway-sim")
        stack.wait_healthy("triton")
        yield stack
    finally:
        stack.run("down", "-v", "--remove-orphans", check=False)
