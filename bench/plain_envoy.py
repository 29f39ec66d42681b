"""Plain Envoy TLS, the baseline every ratio is against: the gateway's own Envoy binary with a
static config (no filters but the router), an ordinary P-256 certificate and one worker."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
from pathlib import Path

from bench.gateway_bench import plain_envoy_bootstrap
from gateway.supervisor import locate_envoy
from triton_backend.launch import TritonProcess, free_port, wait_for_port


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("envoy", timeout=5)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(str(self._path))


def admin_get(socket_path: Path, path: str) -> str:
    """GET *path* from an Envoy admin API on a unix socket."""
    conn = _UnixHTTPConnection(socket_path)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def tls_counters(stats: str) -> dict[str, int]:
    """The listeners' ssl.handshake and ssl.session_reused counters, summed."""
    counts = {"handshake": 0, "session_reused": 0}
    for line in stats.splitlines():
        name, _, value = line.rpartition(": ")
        if not name.startswith("listener.") or name.startswith("listener.admin"):
            continue
        for key in counts:
            if name.endswith(f".ssl.{key}"):
                counts[key] += int(value)
    return counts


class PlainEnvoy:
    def __init__(self, work: Path, triton: TritonProcess, cert: Path, key: Path) -> None:
        self.port = free_port()
        self.admin = work / "plain-admin.sock"
        boot = work / "plain-envoy.json"
        boot.write_text(json.dumps(plain_envoy_bootstrap(self.port, self.admin, triton.config.http_port,
                                                         triton.config.grpc_port, cert, key)))
        self._cmd = [str(locate_envoy()), "-c", str(boot), "--disable-hot-restart", "--concurrency", "1",
                     "--log-level", "error"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tls_counters(self) -> dict[str, int]:
        return tls_counters(admin_get(self.admin, "/stats?filter=ssl"))

    def __enter__(self) -> PlainEnvoy:
        self.proc = subprocess.Popen(self._cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
