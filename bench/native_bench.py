"""The data plane measured the way the field measures a proxy: native load generators driven to
saturation, every target in front of the same Triton, interleaved rounds, medians, ratios against
plain Envoy TLS and nginx measured in the same run.

Targets
  envoy              the same Envoy binary, static config, ordinary P-256 certificate, 1 worker
  nginx              Debian's nginx, 1 worker, same certificate (the common alternative)
  gateway            ratls-gateway with the default policy (sim platform, SNP-format certificate)
  gateway_nofilters  the same with filters.enabled: false (what the request policy costs)
  gateway_tdx        the gateway on sim-tdx: a 13 KB certificate (handshake scenarios only)

Scenarios (connections swept where the load is steady)
  health            GET /v2/health/ready (wrk)
  http_small        POST a 4-element infer (wrk), 1 / 16 / 64 connections
  http_2mib         POST 2 MiB of binary tensors (wrk)
  grpc_small        unary ModelInfer (h2load), 1 / 16 / 64 connections; successes from Triton's statistics
  handshake_full    full TLS 1.3 handshakes/s (openssl s_time -new, parallel processes; no resumption,
                    which Envoy's counters confirm)
  conn_per_request  a new connection per request (wrk, Connection: close): TLS session resumption,
                    as clients do it; the share of resumed handshakes is read from Envoy's counters

Server CPU per request is the proxy's own (utime + stime from /proc), the steadier figure on a
shared machine whose other tenants slow the load generator as much as the proxy."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.gateway_bench import SMALL, _cpu_seconds, _tree, large_body, ordinary_cert, start_gateway, start_nginx
from bench.plain_envoy import PlainEnvoy, admin_get, tls_counters
from triton_backend.demo import demo_repository
from triton_backend.launch import TritonConfig, TritonProcess, free_port

SWEEP = (1, 16, 64)
DEFAULT_CONNECTIONS = 16
HANDSHAKE_PROCESSES = 4
INFER = "/v2/models/add_sub/infer"
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass
class Target:
    name: str
    port: int
    pids: Callable[[], list[int]]  # the proxy's processes, for CPU per request
    tls_counters: Callable[[], dict[str, int]] | None = None  # Envoy's ssl.handshake / ssl.session_reused
    handshakes_only: bool = False
    gateway: Any = None  # the GatewayThread of a gateway target
    cert_pem: Path | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    connections: tuple[int, ...]
    run: Callable[[Target, int], loadgen.Sample]
    handshake: bool = False


@dataclass
class Cell:
    samples: list[loadgen.Sample] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    resumed_share: list[float] = field(default_factory=list)


def s_time_full(port: int, processes: int, seconds: float) -> loadgen.Sample:
    """Full TLS 1.3 handshakes/s: *processes* `openssl s_time -new` loops in parallel."""
    start = time.perf_counter()
    procs = [subprocess.Popen(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time",
                               f"{max(1, round(seconds))}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, stdin=subprocess.DEVNULL) for _ in range(processes)]
    total = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 60)
        m = re.search(r"(\d+) connections in [\d.]+s", out)
        if proc.returncode != 0 or not m:
            raise loadgen.LoadError(f"openssl s_time failed: {out[-400:]}")
        total += int(m.group(1))
    elapsed = time.perf_counter() - start
    return loadgen.Sample(rps=total / elapsed, p50_ms=float("nan"), p99_ms=float("nan"), requests=total)


def scenarios(work: Path, seconds: float, triton: TritonProcess) -> list[Scenario]:
    small, large, grpc = work / "small.json", work / "large.bin", work / "grpc.bin"
    small.write_bytes(SMALL)
    large_bytes, header_length = large_body()
    large.write_bytes(large_bytes)
    grpc.write_bytes(grpc_infer_body())
    executed = loadgen.triton_success_counter(triton.http_url, "add_sub")
    json_ct = (("Content-Type", "application/json"),)
    health = loadgen.HttpRequest("/v2/health/ready")
    small_req = loadgen.HttpRequest(INFER, "POST", json_ct, small)
    large_req = loadgen.HttpRequest(INFER, "POST", (("Content-Type", "application/octet-stream"),
                                                    ("Inference-Header-Content-Length", str(header_length))), large)
    closing = loadgen.HttpRequest("/v2/health/ready", headers=(("Connection", "close"),))

    def with_wrk(req: loadgen.HttpRequest) -> Callable[[Target, int], loadgen.Sample]:
        return lambda target, c: loadgen.wrk(target.port, req, c, seconds, work)

    return [
        Scenario("health", (DEFAULT_CONNECTIONS,), with_wrk(health)),
        Scenario("http_small", SWEEP, with_wrk(small_req)),
        Scenario("http_2mib", (DEFAULT_CONNECTIONS,), with_wrk(large_req)),
        Scenario("grpc_small", SWEEP, lambda target, c: loadgen.h2load_grpc(
            target.port, GRPC_INFER, grpc, c, seconds, work, executed)),
        Scenario("handshake_full", (HANDSHAKE_PROCESSES,),
                 lambda target, c: s_time_full(target.port, c, seconds), handshake=True),
        Scenario("conn_per_request", (DEFAULT_CONNECTIONS,), with_wrk(closing), handshake=True),
    ]


def grpc_infer_body() -> bytes:
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name="add_sub")
    for name in ("INPUT0", "INPUT1"):
        tensor = req.inputs.add(name=name, datatype="FP32", shape=[4])
        tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
    return loadgen.grpc_frame(req.SerializeToString())


def measure(target: Target, scenario: Scenario, connections: int, cell: Cell, triton: TritonProcess) -> None:
    # the admin call for Envoy's counters goes before the CPU window: it is not request work
    tls0 = target.tls_counters() if target.tls_counters else None
    pids = target.pids()
    cpu0 = _cpu_seconds(pids)
    try:
        sample = scenario.run(target, connections)
    except loadgen.LoadError as exc:
        if not triton.running:
            triton.check_alive()  # raises with Triton's own last log lines: why the run failed
        raise loadgen.LoadError(f"{target.name} {scenario.name} at {connections}: {exc}") from exc
    cell.cpu_us.append((_cpu_seconds(pids) - cpu0) * 1e6 / max(sample.requests, 1))
    cell.samples.append(sample)
    if tls0 is not None and target.tls_counters is not None:
        tls1 = target.tls_counters()
        handshakes = tls1["handshake"] - tls0["handshake"]
        cell.resumed_share.append((tls1["session_reused"] - tls0["session_reused"]) / max(handshakes, 1))


def interleaved(targets: list[Target], plan: list[Scenario], rounds: int,
                triton: TritonProcess) -> dict[tuple[str, str, int], Cell]:
    """Round by round, each cell once per round; the target order alternates (A B C, C B A, ...)
    so no target always runs on the warmer or the noisier slot."""
    cells: dict[tuple[str, str, int], Cell] = {}
    for i in range(rounds):
        order = targets if i % 2 == 0 else targets[::-1]
        for scenario in plan:
            for connections in scenario.connections:
                for target in order:
                    if target.handshakes_only and not scenario.handshake:
                        continue
                    measure(target, scenario, connections, cells.setdefault(
                        (target.name, scenario.name, connections), Cell()), triton)
    return cells


def summarise(cells: dict[tuple[str, str, int], Cell]) -> list[dict[str, Any]]:
    rows = []
    for (name, scenario, connections), cell in cells.items():
        row = {"target": name, "scenario": scenario, "connections": connections,
               **loadgen.median_sample(cell.samples), "server_cpu_us_per_req": statistics.median(cell.cpu_us)}
        if cell.resumed_share:
            row["resumed_share"] = statistics.median(cell.resumed_share)
        rows.append(row)
    by_key = {(r["target"], r["scenario"], r["connections"]): r for r in rows}
    for row in rows:
        for base in ("envoy", "nginx"):
            ref = by_key.get((base, row["scenario"], row["connections"]))
            if ref is not None and ref["rps"] > 0:
                row[f"vs_{base}"] = row["rps"] / ref["rps"]
                row[f"p50_vs_{base}"] = row["p50_ms"] / ref["p50_ms"] if ref["p50_ms"] == ref["p50_ms"] else None
                row[f"cpu_vs_{base}"] = row["server_cpu_us_per_req"] / ref["server_cpu_us_per_req"]
    return rows


@contextmanager
def _targets(work: Path, triton: TritonProcess) -> Iterator[list[Target]]:
    from ratls.platforms.sim.chain import load_or_create

    load_or_create(work / "sim")
    cert, key = ordinary_cert(work)
    with ExitStack() as stack:
        envoy = stack.enter_context(PlainEnvoy(work, triton, cert, key))
        targets = [Target("envoy", envoy.port, lambda: [envoy.pid], envoy.tls_counters, cert_pem=cert)]
        nginx_port = free_port()
        nginx = start_nginx(work, nginx_port, triton, cert, key)
        if nginx is not None:
            stack.callback(_stop, nginx)
            targets.append(Target("nginx", nginx_port, lambda: _tree(nginx.pid)))
        for label, options, handshakes_only in (("gateway", {}, False),
                                                ("gateway_nofilters", {"filters": {"enabled": False}}, False),
                                                ("gateway_tdx", {"platform": "sim-tdx"}, True)):
            gw, port, pem, _size = start_gateway(triton, work, label, **options)
            stack.callback(gw.stop)
            targets.append(Target(label, port, lambda gw=gw: [gw.envoy_pid()],
                                  lambda gw=gw: gateway_tls_counters(gw), handshakes_only, gw, pem))
        yield targets


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)


def gateway_tls_counters(gw: Any) -> dict[str, int]:
    admin = gw.gateway.data_plane.admin
    return tls_counters(admin_get(admin.socket_path, "/stats?filter=ssl"))


def run(rounds: int | None = None, seconds: float | None = None) -> dict[str, Any]:
    missing = loadgen.missing_tools()
    if missing:
        return {"skipped": f"{', '.join(missing)} not installed (Debian: wrk, nghttp2-client)"}
    rounds = rounds or int(os.environ.get("BENCH_ROUNDS", "3"))
    seconds = seconds or int(os.environ.get("BENCH_SECONDS", "2"))
    with tempfile.TemporaryDirectory(prefix="ratls-native-") as tmp:
        work = Path(tmp)
        with TritonProcess(TritonConfig(demo_repository())) as triton:
            triton.wait_ready()
            with _targets(work, triton) as targets:
                plan = scenarios(work, seconds, triton)
                # warm-up, not recorded: connection pools, caches, and each gRPC target's rate estimate
                interleaved(targets, scenarios(work, 1.0, triton), 1, triton)
                rows = summarise(interleaved(targets, plan, rounds, triton))
                certificates = {t.name: certificate_sizes(t.port) for t in targets if t.name != "nginx"}
                latency = latency_view([t for t in targets if t.name in ("envoy", "gateway")])
                rotation = next(t.gateway for t in targets if t.name == "gateway").rotate_seconds()
    return {"rounds": rounds, "seconds": seconds, "sweep": list(SWEEP), "rows": rows, "certificates": certificates,
            "latency_view": latency, "rotation_seconds_median": rotation}


def latency_view(targets: list[Target], seconds: float = 2.0) -> dict[str, dict[str, float]]:
    """One Python client at a time (http.client, tritonclient gRPC): the latency a script sees,
    not a throughput figure (the client, not the proxy, sets the pace)."""
    from bench.gateway_bench import _grpc_worker, _http_worker

    out: dict[str, dict[str, float]] = {}
    for target in targets:
        http = sorted(_http_worker(("127.0.0.1", target.port, True, "small", seconds)))
        grpc = sorted(_grpc_worker(("127.0.0.1", target.port, str(target.cert_pem), seconds)))
        out[target.name] = {"http_small_p50_ms": statistics.median(http) * 1000,
                            "grpc_small_p50_ms": statistics.median(grpc) * 1000}
    return out


def certificate_sizes(port: int) -> dict[str, int]:
    """The served certificate's DER size and its brotli size (RFC 8879 compresses the
    Certificate message with brotli; its few bytes of framing aside, this is what goes out)."""
    import socket
    import ssl

    import brotli

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port)) as s, ctx.wrap_socket(s) as t:
        der = t.getpeercert(binary_form=True) or b""
    return {"der_bytes": len(der), "brotli_bytes": len(brotli.compress(der))}
