"""``ratls doctor``'s Triton checks: the managed binary, or the external server's hardening and the
user it runs as."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from triton_backend.hardening import HardeningReport
from triton_backend.locate import TritonInstall, TritonNotFound

from ..config import GatewayConfig
from .findings import Finding, fail, ok, warn
from .host import Host, Identity

# ---- Triton ----

def check_triton_binary(binary: str | None, locate_fn: Callable[[str | None], TritonInstall]) -> Finding:
    try:
        install = locate_fn(binary)
    except TritonNotFound as exc:
        return fail("triton.binary", exc.message, hint="set triton.binary to the tritonserver path, run in the NGC "
                    "Triton image, or pip install nvidia-pytriton")
    return ok("triton.binary", f"tritonserver {install.binary} (from {install.source})")


def check_external_triton(cfg: GatewayConfig, report: HardeningReport, grpc_answers: bool) -> list[Finding]:
    t = cfg.triton
    url = f"http://{t.host}:{t.http_port}"
    refuse = t.on_exposed == "refuse"
    problem = fail if refuse else warn
    consequence = "ratls serve refuses to start" if refuse else "ratls serve only warns (triton.on_exposed: warn)"
    grpc = (ok("triton.grpc", f"gRPC port {t.host}:{t.grpc_port} accepts connections") if grpc_answers else
            fail("triton.grpc", f"nothing accepts connections on {t.host}:{t.grpc_port}",
                 hint="start Triton with --grpc-port matching triton.grpc_port"))
    if not report.answered:
        return [fail("triton.http", f"Triton does not answer at {url}",
                     hint=f"start Triton listening on {t.host}:{t.http_port}, or correct triton.host/http_port"),
                grpc]
    findings = [ok("triton.http", f"Triton {report.version or '(version unknown)'} answers at {url}"), grpc]
    if report.model_control == "disabled":
        findings.append(ok("triton.model-control", "the model load/unload API is refused (model control none)"))
    else:
        detail = ("clients can load and unload models after attestation" if report.model_control == "explicit"
                  else "the model-control probe was inconclusive")
        findings.append(problem("triton.model-control", f"model control '{report.model_control}': {detail}; "
                                f"{consequence}", hint="start Triton with --model-control-mode=none"))
    bound = "; ".join(f"{port}: {', '.join(addrs) or 'no listener seen'}"
                      for port, addrs in sorted(report.listen_addresses.items()))
    if report.exposed:
        findings.append(problem("triton.listeners", f"reachable beyond loopback: {', '.join(report.exposed)} "
                                f"({consequence})", hint="start Triton with --http-address 127.0.0.1 "
                                "--grpc-address 127.0.0.1 --metrics-address 127.0.0.1"))
    else:
        findings.append(ok("triton.listeners", f"loopback only ({bound})"))
    return findings


def socket_owner(inodes: Iterable[int], proc: Path) -> Identity | None:
    """The user of the process holding one of these sockets, from /proc (root sees every
    process; anyone else only their own)."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    if not wanted:
        return None
    try:
        pids = [p for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            links = {os.readlink(fd) for fd in (pid / "fd").iterdir()}
            if links & wanted:
                return _identity_from_status((pid / "status").read_text())
        except OSError:
            continue  # exited meanwhile, or not ours to look at
    return None


def _identity_from_status(text: str) -> Identity | None:
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        uid = int(fields["Uid"].split()[1])  # the effective uid is what the kernel checks
        gids = {int(fields["Gid"].split()[1]), *(int(g) for g in fields.get("Groups", "").split())}
    except (KeyError, IndexError, ValueError):
        return None
    return Identity(uid, frozenset(gids))


def triton_findings(cfg: GatewayConfig, host: Host) -> tuple[list[Finding], Identity | None]:
    """The findings, and the user Triton runs as (None: not known)."""
    t = cfg.triton
    if t.mode == "managed":
        # the gateway starts Triton itself, as the user it runs as
        return [check_triton_binary(t.binary, host.locate_triton)], host.user
    report = host.hardening_check(f"http://{t.host}:{t.http_port}", [t.http_port, t.grpc_port])
    findings = check_external_triton(cfg, report, host.connect(t.host, t.grpc_port))
    return findings, socket_owner(report.listeners, host.path("/proc"))
