"""A Docker engine for the compose tests: the one already running, or our own dockerd with its
own data root, exec root and socket, stopped by its PID (never one we did not start)."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..stack import terminate


class EngineError(Exception):
    """No Docker engine could be reached or started."""


@dataclass
class Engine:
    host: str  # a DOCKER_HOST value
    proc: subprocess.Popen[bytes] | None = None  # set when we started dockerd
    exec_root: Path | None = None
    log_path: Path | None = None
    kept_log: Path | None = None  # where the daemon's log is copied when it stops
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {**os.environ, "DOCKER_HOST": self.host}

    def docker(self, *args: str, check: bool = True, timeout: float = 600,
               input_bytes: bytes | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=input_bytes is None,
                                timeout=timeout, input=input_bytes)
        if check and result.returncode != 0:
            raise EngineError(f"docker {' '.join(args[:3])} failed ({result.returncode}): {result.stderr}")
        return result

    def stop(self) -> None:
        if self.proc is None:
            return
        terminate(self.proc)
        self.proc = None
        if self.exec_root is not None:
            if self.log_path is not None and self.log_path.exists() and self.kept_log is not None:
                shutil.copy2(self.log_path, self.kept_log)  # for diagnosis after the run
            shutil.rmtree(self.exec_root, ignore_errors=True)


def _answers(host: str, timeout: float = 10) -> bool:
    try:
        result = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                                env={**os.environ, "DOCKER_HOST": host}, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def find_running() -> Engine | None:
    for host in (os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock"):
        if host and _answers(host):
            return Engine(host)
    return None


def start_own(data_root: Path, timeout: float = 60) -> Engine:
    """dockerd as root on its own roots; images persist in *data_root* between runs."""
    if shutil.which("dockerd") is None:
        raise EngineError("dockerd is not installed: make e2e-compose installs Debian's docker.io as root "
                          "(apt-get install docker-compose)")
    if os.geteuid() != 0:
        raise EngineError("starting a Docker engine needs root; run as root or start dockerd yourself "
                          "and set DOCKER_HOST")
    data_root.mkdir(parents=True, exist_ok=True)
    # exec root and socket under a short temporary path: unix socket paths are limited to 108 bytes
    exec_root = Path(tempfile.mkdtemp(prefix="ratls-dockerd-"))
    socket_path = exec_root / "docker.sock"
    log_path = exec_root / "dockerd.log"
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(["dockerd", "--data-root", str(data_root), "--exec-root", str(exec_root / "exec"),
                             "--pidfile", str(exec_root / "dockerd.pid"), "-H", f"unix://{socket_path}"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    engine = Engine(f"unix://{socket_path}", proc, exec_root, log_path, kept_log=data_root.parent / "dockerd.log")
    atexit.register(engine.stop)  # an interrupted run stops its daemon too
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log_path.read_text(errors="replace")[-3000:]
            shutil.rmtree(exec_root, ignore_errors=True)
            raise EngineError(f"dockerd exited with {proc.returncode}:\n{text}")
        if socket_path.exists() and _answers(engine.host, timeout=5):
            return engine
        time.sleep(0.5)
    text = log_path.read_text(errors="replace")[-3000:]
    engine.stop()
    raise EngineError(f"dockerd did not answer within {timeout:g}s:\n{text}")
