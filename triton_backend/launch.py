"""Launch an unmodified ``tritonserver`` hardened by default, wait for readiness, stop it.

Hardened means: every listener on 127.0.0.1, no model control (the repository is fixed at
start, so the attested manifest is what runs), strict readiness, exit on any model error,
no auto-completed configs, tracing off.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ratls.errors import ConfigError

from .locate import TritonInstall, TritonNotFound, locate, prepare_wheel_backends
from .manifest import ManifestError, snapshot_repository
from .procutil import with_parent_death_signal

LOOPBACK = "127.0.0.1"


class TritonError(ConfigError):
    """Base class: Triton could not be started, became unready, or crashed. A problem on the
    operator's side (ports, repository, binary, a model that does not load): a ConfigError, so
    whoever catches the project's errors gets the message and the hint, never a traceback."""


class TritonLaunchError(TritonError):
    pass


class TritonCrashed(TritonError):
    pass


__all__ = ["TritonConfig", "TritonProcess", "TritonError", "TritonLaunchError", "TritonCrashed", "TritonNotFound",
           "free_port"]


_HANDED_OUT: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = LOOPBACK) -> int:
    """A free TCP port for a listener that something else will bind a moment later.

    Ports are drawn from below the kernel's ephemeral range: a port the kernel hands out for
    bind(0) can be taken as the source port of any outgoing connection before our listener
    binds it (a real flake under load), while ports outside that range are only ever taken
    by an explicit bind. Ports are not handed out twice by one process."""
    low, _high = _ephemeral_range()
    start = 10000 if low > 11000 else 1024
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(start, low)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # everything below is taken: fall back
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, host: str = LOOPBACK, timeout: float = 30.0) -> None:
    """Block until something accepts TCP connections on *port* (a child we just started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing accepted connections on {host}:{port} within {timeout:g}s")


def bind_error(address: str, port: int) -> OSError | None:
    """None when *address*:*port* can be bound now, else the error a listener would get."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR, as Triton, Envoy and aiohttp set it, so sockets in TIME_WAIT do not count as
        # busy; never SO_REUSEPORT, which would let this probe share a live listener's port and miss it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            return exc
    return None


@dataclass
class TritonConfig:
    model_repository: Path
    http_port: int = 0  # 0: choose a free port
    grpc_port: int = 0
    metrics_port: int = 0
    address: str = LOOPBACK  # tests may bind elsewhere to exercise the hardening check
    model_control_mode: str = "none"
    binary: str | None = None
    work_dir: Path | None = None
    log_verbose: int = 0
    extra_args: list[str] = field(default_factory=list)
    ready_timeout: float = 120.0
    # Serve a hard-linked snapshot with bytecode-cache blockers (see manifest.snapshot_repository)
    # so Triton cannot write __pycache__ into the repository it was measured from.
    snapshot: bool = True
    die_with_parent: bool = True
    exit_timeout: int = 10
    # Triton API groups (its --http-restricted-api names) that no one may call, not even a
    # local process on the loopback ports: see restricted_api_args.
    deny_apis: tuple[str, ...] = ()


# Keys no client can present, so the restricted groups need no secret (Triton's command line is
# readable by local processes). HTTP/1.1: a value holding a raw line feed, which ends a header
# line. gRPC: a key with capitals, which HTTP/2 forbids in header names (gRPC core resets such a
# stream; it does pass a line feed in a value through, so that trick is not enough there).
UNSATISFIABLE_HTTP_KEY = "ratls-denied=never\nsent"
UNSATISFIABLE_GRPC_KEY = "Ratls-Denied=never"


def restricted_api_args(groups: tuple[str, ...]) -> list[str]:
    if not groups:
        return []
    joined = ",".join(sorted(groups))
    return [f"--http-restricted-api={joined}:{UNSATISFIABLE_HTTP_KEY}",
            f"--grpc-restricted-protocol={joined}:{UNSATISFIABLE_GRPC_KEY}"]


class TritonProcess:
    def __init__(self, config: TritonConfig, install: TritonInstall | None = None) -> None:
        self.config = config
        self.install = install
        self.proc: subprocess.Popen[bytes] | None = None
        self._own_work_dir: tempfile.TemporaryDirectory[str] | None = None
        self.work_dir: Path | None = None
        self.log_path: Path | None = None
        self.served_repository: Path = Path(config.model_repository)
        self._regions: set[Path] = set()  # python-backend regions seen, removed when Triton is gone

    # -- addresses --
    @property
    def http_url(self) -> str:
        return f"http://{self._client_host}:{self.config.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self._client_host}:{self.config.grpc_port}"

    @property
    def _client_host(self) -> str:
        wildcard = self.config.address in ("0.0.0.0", "::")  # noqa: S104 - recognising, not binding
        return LOOPBACK if wildcard else self.config.address

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self, backend_dir: Path | None) -> list[str]:
        c = self.config
        assert self.install is not None
        cmd = [
            str(self.install.binary),
            f"--model-repository={self.served_repository}",
            f"--http-address={c.address}", f"--http-port={c.http_port}",
            f"--grpc-address={c.address}", f"--grpc-port={c.grpc_port}",
            f"--metrics-address={c.address}", f"--metrics-port={c.metrics_port}",
            f"--model-control-mode={c.model_control_mode}",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--disable-auto-complete-config",
            "--trace-config=level=OFF",
            "--allow-sagemaker=false",
            "--allow-vertex-ai=false",
            f"--exit-timeout-secs={c.exit_timeout}",
            f"--log-verbose={c.log_verbose}",
        ]
        if backend_dir is not None:
            cmd.append(f"--backend-directory={backend_dir}")
        return cmd + restricted_api_args(c.deny_apis) + list(c.extra_args)

    def start(self) -> None:
        if self.running:
            raise TritonLaunchError("this Triton is already running")
        c = self.config
        repo = Path(c.model_repository)
        if not repo.is_dir():
            raise TritonLaunchError(f"model repository {repo} is not a directory",
                                    hint="check triton.model_repository in the gateway config")
        self.install = self.install or locate(c.binary)
        for attr in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(c, attr)
            if port == 0:
                setattr(c, attr, free_port())
            elif bind_error(c.address, port) is not None:
                raise TritonLaunchError(f"{attr.replace('_', ' ')} {port} on {c.address} is already in use",
                                        hint="choose another port or stop what holds it")
        if c.work_dir is None:
            self._own_work_dir = tempfile.TemporaryDirectory(prefix="ratls-triton-")
            self.work_dir = Path(self._own_work_dir.name)
        else:
            self.work_dir = Path(c.work_dir)
            self.work_dir.mkdir(parents=True, exist_ok=True)
        self.served_repository = repo
        if c.snapshot:
            served = self.work_dir / "models"
            if served.exists():  # a restart: lay out a fresh snapshot of the source
                shutil.rmtree(served)
            try:
                self.served_repository = snapshot_repository(repo, served)
            except ManifestError as exc:
                raise TritonLaunchError(f"cannot prepare the model repository: {exc}",
                                        hint="fix the repository as the message says, then start again") from None
        backend_dir = self.install.backend_dir
        if self.install.wheel_root is not None:
            backend_dir = prepare_wheel_backends(self.install, self.work_dir)
        env = dict(os.environ)
        for key, value in self.install.env.items():
            env[key] = f"{value}:{env[key]}" if key == "LD_LIBRARY_PATH" and env.get(key) else value
        # The python backend stub runs model.py with the interpreter found first on PATH;
        # put the one running us first so the models see the same site-packages.
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        self.log_path = self.work_dir / "tritonserver.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child, closed in stop()
        try:
            # PR_SET_PDEATHSIG fires when the *thread* that forked exits: call start() from a
            # long-lived thread (the gateway calls it from its event-loop thread).
            cmd = self.command(backend_dir)
            if c.die_with_parent:
                cmd = with_parent_death_signal(cmd)
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                         # the python backend's shared-memory regions in /dev/shm
                                         # hold tensors: readable by Triton's user only
                                         umask=0o077)
        except OSError as exc:
            log.close()
            raise TritonLaunchError(f"cannot execute {self.install.binary}: {exc.strerror}",
                                    hint="check triton.binary, or install tritonserver (the server extra ships "
                                         "one in the nvidia-pytriton wheel)") from None
        self._log = log

    def log_tail(self, lines: int = 20) -> str:
        """Triton's error lines (glog 'E' prefix, where model load failures are) plus the tail."""
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        all_lines = self.log_path.read_bytes()[-256 * 1024:].decode("utf-8", "replace").splitlines()
        errors = [line for line in all_lines if re.match(r"^E\d{4} ", line)][:10]
        tail = [line for line in all_lines[-lines:] if line not in errors]
        return "\n".join(errors + (["..."] if errors else []) + tail)

    def is_ready(self, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=timeout) as resp:  # noqa: S310
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout if timeout is not None else self.config.ready_timeout)
        while time.monotonic() < deadline:
            if not self.running:
                code = self.proc.returncode if self.proc else None
                raise TritonCrashed(f"tritonserver exited with code {code} before becoming ready; last log "
                                    f"lines:\n{self.log_tail()}", hint="Triton's log lines above say why; often a "
                                                                       "model that does not load")
            if self.is_ready():
                self.make_shm_private()  # before the first request can put a tensor there
                return
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise TritonLaunchError(f"tritonserver was not ready within the deadline; last log lines:\n{tail}",
                                hint="raise triton.ready_timeout if the models are large, or read the log lines")

    # The python backend's region names (boost shared_memory_object under /dev/shm).
    SHM_PREFIX = "/dev/shm/triton_python_backend_shm_region_"  # noqa: S108 - reading Triton's, not creating

    def shared_memory_regions(self) -> set[Path]:
        """The python-backend regions mapped by this Triton and its stubs (its process group),
        read from /proc: exactly ours, whatever another Triton on the host does."""
        if self.proc is None:
            return set()
        regions: set[Path] = set()
        prefix = self.SHM_PREFIX.encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if os.getpgid(int(proc.name)) != self.proc.pid:
                    continue
                maps = (proc / "maps").read_bytes()
            except (OSError, ProcessLookupError):
                continue
            for line in maps.splitlines():
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].startswith(prefix):
                    regions.add(Path(os.fsdecode(parts[5].removesuffix(b" (deleted)"))))
        return regions

    def make_shm_private(self) -> int:
        """chmod 0600 the python backend's shared-memory regions: it creates them 0644 whatever
        the umask, and they hold request and response tensors. Returns how many changed. A
        descriptor opened before the change is not revoked: give Triton a private /dev/shm
        (container IPC namespace, systemd PrivateDevices=) where other local users run."""
        changed = 0
        try:
            regions = self.shared_memory_regions()
        except Exception:  # noqa: BLE001 - never let the scan stop Triton's supervision
            return 0
        self._regions |= regions
        for region in regions:
            try:
                fd = os.open(region, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue  # released between the scan and the open, or a symlink
            try:
                st = os.fstat(fd)
                if st.st_uid == os.getuid() and st.st_mode & 0o077:
                    os.fchmod(fd, 0o600)
                    changed += 1
            except OSError:
                pass
            finally:
                os.close(fd)
        return changed

    def check_alive(self) -> None:
        """Raise TritonCrashed (with the log tail) if the process has died."""
        if self.proc is not None and self.proc.poll() is not None:
            raise TritonCrashed(f"tritonserver (pid {self.proc.pid}) exited with code {self.proc.returncode}; "
                                f"last log lines:\n{self.log_tail()}")

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait, then SIGKILL the process group (Triton's python stubs included)."""
        if self.proc is None:
            return None
        grace = timeout if timeout is not None else self.config.exit_timeout + 5
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftover stubs in our own session
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the stubs hold inherited sockets until they are gone
            try:
                os.killpg(self.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.wait(5)
        code = self.proc.returncode
        for region in self._regions:  # a killed Triton leaves them behind, tensors included
            try:
                if region.lstat().st_uid == os.getuid():
                    region.unlink()
            except OSError:
                pass
        self._regions.clear()
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None  # type: ignore[assignment]
        return code

    def close(self) -> None:
        self.stop()
        if self._own_work_dir is not None:
            self._own_work_dir.cleanup()
            self._own_work_dir = None

    def __enter__(self) -> TritonProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
