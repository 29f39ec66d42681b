"""External mode: inspect a Triton this project did not start.

Reports (a) whether it listens on, or answers at, a non-loopback address of this host,
(b) which model-control mode it runs in, found by probing the repository load API with a
model name that cannot exist, and (c) its version. The gateway decides from its own
config whether a finding refuses start-up or only warns.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PROBE_MODEL = "ratls-hardening-probe-nonexistent"


@dataclass
class HardeningReport:
    version: str | None = None
    extensions: list[str] = field(default_factory=list)
    # "disabled": the load/unload API is refused (Triton's NONE or POLL mode; the API cannot tell
    # them apart), "explicit": clients can load models, "unknown": the probe was inconclusive.
    model_control: str = "unknown"
    listen_addresses: dict[int, list[str]] = field(default_factory=dict)  # port -> bind addresses
    exposed: list[str] = field(default_factory=list)  # "addr:port" reachable/bound beyond loopback
    problems: list[str] = field(default_factory=list)
    answered: bool = True  # False: nothing answered at the URL (not started yet, or wrong address)
    listeners: tuple[int, ...] = ()  # inodes of the listening sockets on the checked ports

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        return {"version": self.version, "answered": self.answered, "model_control": self.model_control,
                "exposed": self.exposed,
                "listen_addresses": {str(k): v for k, v in self.listen_addresses.items()},
                "problems": self.problems, "ok": self.ok}


def _hex_to_addr(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # /proc/net/tcp6 stores four little-endian 32-bit words
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def _listen_sockets(proc_net: Path) -> list[tuple[str, int, int]]:
    """(address, port, inode) of every LISTEN socket in /proc/net/tcp and tcp6."""
    found: list[tuple[str, int, int]] = []
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 4 or cols[3] != "0A":  # 0A = LISTEN
                continue
            addr_hex, port_hex = cols[1].split(":")
            inode = int(cols[9]) if len(cols) > 9 else 0  # a truncated row still tells the address
            found.append((_hex_to_addr(addr_hex), int(port_hex, 16), inode))
    return found


def listening_addresses(port: int, proc_net: Path = Path("/proc/net")) -> list[str]:
    """Local addresses with a LISTEN socket on *port*."""
    return sorted({addr for addr, bound, _ in _listen_sockets(proc_net) if bound == port})


def listener_inodes(ports: list[int], proc_net: Path = Path("/proc/net")) -> tuple[int, ...]:
    """Socket inodes of the LISTEN sockets on *ports*: they change when another process (or a
    restarted one) binds the port, even between two health polls."""
    return tuple(sorted({inode for _, bound, inode in _listen_sockets(proc_net) if bound in ports}))


def _is_loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def local_addresses() -> list[str]:
    """Non-loopback addresses of this host (best effort, no external tools)."""
    addrs: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            addrs.add(str(info[4][0]))
    except OSError:
        pass
    try:
        # /proc/net/fib_trie lists every local IPv4 address under "/32 host LOCAL".
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
        for prev, line in zip(lines, lines[1:], strict=False):
            if "/32 host LOCAL" in line:
                addrs.add(prev.split()[-1])
    except OSError:
        pass
    return sorted(a for a in addrs if not _is_loopback(a) and not a.startswith("fe80"))


def _answers(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _http(url: str, method: str = "GET", timeout: float = 3.0) -> tuple[int, str]:
    data = b"{}" if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            return resp.status, resp.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(65536).decode("utf-8", "replace")


def probe_model_control(http_url: str, timeout: float = 3.0) -> str:
    """NONE and POLL modes refuse explicit loads outright; EXPLICIT mode tries to load and fails
    to find the model. The probe name cannot exist, so nothing is ever loaded."""
    status, body = _http(f"{http_url}/v2/repository/models/{PROBE_MODEL}/load", "POST", timeout)
    text = body.lower()
    if "load / unload is not allowed" in text:
        return "disabled"
    if status >= 400 and (PROBE_MODEL in body or "failed to" in text or "not found" in text):
        return "explicit"
    return "unknown"


def check(http_url: str, ports: list[int], *, timeout: float = 3.0) -> HardeningReport:
    report = HardeningReport()
    try:
        status, body = _http(f"{http_url}/v2", timeout=timeout)
        meta = json.loads(body) if status == 200 else {}
        report.version = meta.get("version")
        report.extensions = list(meta.get("extensions", []))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        report.problems.append(f"Triton does not answer at {http_url}: {exc}")
        report.answered = False
        return report
    try:
        report.model_control = probe_model_control(http_url, timeout)
    except (urllib.error.URLError, OSError) as exc:
        report.problems.append(f"model-control probe failed: {exc}")
    if report.model_control != "disabled":
        report.problems.append(f"Triton runs with model control '{report.model_control}': clients or files could "
                               "change the served models after attestation (start it with --model-control-mode none)")
    candidates = local_addresses()
    sockets = _listen_sockets(Path("/proc/net"))  # read once for every port
    report.listeners = tuple(sorted({inode for _, bound, inode in sockets if bound in ports}))
    for port in ports:
        bound = sorted({addr for addr, at, _ in sockets if at == port})
        report.listen_addresses[port] = bound
        for addr in bound:
            if not _is_loopback(addr):
                shown = "all interfaces" if addr in ("0.0.0.0", "::") else addr  # noqa: S104
                report.exposed.append(f"{addr}:{port}")
                report.problems.append(f"port {port} listens on {shown}, not only loopback")
        for addr in candidates:
            key = f"{addr}:{port}"
            if key not in report.exposed and _answers(addr, port, timeout=0.5):
                report.exposed.append(key)
                report.problems.append(f"port {port} answers on {addr}")
    return report
