"""``ratls doctor``'s port checks: every TCP port ``ratls serve`` binds is free and configured once."""

from __future__ import annotations

import errno

from ..config import GatewayConfig
from .findings import Finding, fail, ok
from .host import Host

# ---- ports ----

def planned_ports(cfg: GatewayConfig) -> list[tuple[str, str, int]]:
    """(name, address, port) of every TCP port ``ratls serve`` binds itself."""
    ports = [("port.listen", cfg.listen.address, cfg.listen.port),
             ("port.operator", cfg.control.metrics_address, cfg.control.metrics_port)]
    t = cfg.triton
    if t.mode == "managed":  # 0 means a free port is chosen at start-up; external ports are Triton's own
        ports += [(f"port.triton-{kind}", "127.0.0.1", port)
                  for kind, port in (("http", t.http_port), ("grpc", t.grpc_port), ("metrics", t.metrics_port))
                  if port]
    return ports


def check_port(name: str, address: str, port: int, error: OSError | None) -> Finding:
    where = f"{address}:{port}"
    if error is None:
        return ok(name, f"{where} is free")
    if error.errno == errno.EADDRINUSE:
        return fail(name, f"port {port} ({where}) is already bound by another process",
                    hint=f"find it with ss -ltnp 'sport = :{port}' and stop it, or choose another port in the config "
                         "(a ratls serve already running holds it too)")
    if error.errno == errno.EACCES:
        return fail(name, f"binding port {port} ({where}) is not permitted for this user",
                    hint="use a port >= 1024, or grant CAP_NET_BIND_SERVICE")
    if error.errno == errno.EADDRNOTAVAIL:
        return fail(name, f"{address} is not an address of this host", hint="correct the address in the config")
    return fail(name, f"cannot bind {where}: {error.strerror}")


def port_findings(cfg: GatewayConfig, host: Host) -> list[Finding]:
    ports = planned_ports(cfg)
    findings: list[Finding] = []
    seen: dict[int, str] = {}
    for name, address, port in ports:
        if port in seen:  # the second bind would fail at start-up whatever else runs here
            findings.append(fail(name, f"port {port} is configured twice ({seen[port]} and {name})",
                                 hint="give each listener its own port"))
            continue
        seen[port] = name
        findings.append(check_port(name, address, port, host.bind(address, port)))
    return findings
