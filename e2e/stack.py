"""Start and stop the real stack for e2e tests: `ratls serve` as a subprocess (which starts
the bundled Triton and Envoy itself) on loopback ports chosen free at run time, stopped by
its own PID with SIGTERM; and helpers for clients pinned to the served certificate."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    from triton_backend.launch import free_port as pick

    return pick()


def fetch_cert_pem(port: int) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with ctx.wrap_socket(sock) as tls:
            der = tls.getpeercert(binary_form=True)
    return ssl.DER_cert_to_PEM_cert(der)


def pinned_context(cert_pem: str) -> ssl.SSLContext:
    """Trust exactly this certificate (what a verified client does after appraisal)."""
    ctx = ssl.create_default_context(cadata=cert_pem)
    ctx.check_hostname = False  # the certificate names localhost; we pin the certificate itself
    return ctx


@dataclass
class Stack:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    workdir: Path
    log_path: Path
    sim_dir: Path
    config_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def operator(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.metrics_port}{path}", method=method,
                                     data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read().decode()
        return json.loads(body) if resp.headers.get_content_type() == "application/json" else body

    def admin(self, path: str, method: str = "POST") -> Any:
        """The admin endpoints (``POST /admin/rotate``) live on a 0600 unix socket in the run dir."""
        return admin_request(self.workdir / "run" / "admin.sock", path, method)[1]

    def status(self) -> dict[str, Any]:
        return self.operator("/admin/status")

    def metrics(self) -> str:
        return self.operator("/metrics")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        return terminate(self.proc)


def terminate(proc: subprocess.Popen[Any], timeout: float = 60) -> int:
    """SIGTERM, then SIGKILL after *timeout*; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def start_stack(config: dict[str, Any] | None = None, *, sim_dir: Path, timeout: float = 120.0,
                env: dict[str, str] | None = None, wait: bool = True) -> Stack:
    workdir = Path(tempfile.mkdtemp(prefix="ratls-e2e-"))
    port, metrics_port = free_port(), free_port()
    doc: dict[str, Any] = {
        "version": 1,
        "listen": {"address": "127.0.0.1", "port": port},
        "identity": {"platform": "sim", "sim_state_dir": str(sim_dir), "sans": ["localhost", "127.0.0.1"]},
        "triton": {"mode": "managed", "watch_interval": "1s"},
        "envoy": {"concurrency": 1},
        "control": {"run_dir": str(workdir / "run"), "metrics_port": metrics_port},
    }
    for section, values in (config or {}).items():
        if isinstance(values, dict) and isinstance(doc.get(section), dict):
            doc[section].update(values)
        else:
            doc[section] = values
    config_path = workdir / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(doc))
    log_path = workdir / "gateway.log"
    log = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "ratls.cli", "serve", "-c", str(config_path)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
                            env={**os.environ, **(env or {})})
    log.close()
    stack = Stack(proc, port, metrics_port, workdir, log_path, sim_dir, config_path)
    if not wait:
        return stack
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{stack.log()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return stack
        except OSError:
            pass
        time.sleep(0.2)
    stack.stop()
    raise RuntimeError(f"gateway not ready within {timeout}s:\n{stack.log()[-4000:]}")


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def admin_request(sock: Path, path: str, method: str = "POST", timeout: float = 30.0) -> tuple[int, Any]:
    """What `curl --unix-socket <run_dir>/admin.sock -X POST http://localhost/admin/rotate` does."""
    conn = _UnixHTTPConnection(sock, timeout)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None)
        resp = conn.getresponse()
        body = resp.read().decode()
    finally:
        conn.close()
    return resp.status, json.loads(body) if resp.getheader("Content-Type", "").startswith("application/json") else body


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive
