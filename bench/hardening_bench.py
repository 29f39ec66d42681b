"""What the denial-of-service hardening costs, measured as the field measures a proxy: native
load generators (wrk for HTTP/1.1, h2load for gRPC) at 16 connections to saturation, against
the same gateway with the hardening taken out, alternated round by round, medians compared.

"Hardening" is everything the attested limits added for issue 20: every body buffered before
Triton, the compressed-body and shadowed-path refusals, the
overload manager (heap and connections), the handshake timeout, per-connection buffer limits,
small HTTP/2 windows, max_stream_duration, the JSON local replies and the stream bulkhead.
gRPC answers are HTTP 200 even when refused, so gRPC successes are counted from Triton's own
inference statistics, not from h2load's status counts."""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.gateway_bench import SMALL, GatewayThread, _cpu_seconds, large_body
from bench.native_bench import GRPC_INFER, INFER, grpc_infer_body
from gateway.app import Gateway
from gateway.attested_config import AttestedConfig
from gateway.config import GatewayConfig
from triton_backend.demo import demo_repository
from triton_backend.launch import TritonConfig, TritonProcess, free_port
from triton_backend.manifest import Manifest

CONNECTIONS = 16
HARDENING_ROUTES = ("deny:compressed", "deny:grpc-compressed", "deny:shadowed")


def unharden(plan: Any) -> None:
    """The compiled plan as it was before the hardening (bench only: never served)."""
    from filters.compile import _no_buffer
    from filters.envoy_names import CLUSTER_TRITON_GRPC

    plan.overload_manager = {}
    plan.filter_chain_extras, plan.listener_extras = {}, {}
    for key in ("local_reply_config", "server_name"):
        plan.hcm_extras.pop(key, None)
    plan.hcm_extras["common_http_protocol_options"].pop("max_stream_duration", None)
    plan.hcm_extras["http2_protocol_options"] = {
        "max_concurrent_streams": plan.hcm_extras["http2_protocol_options"]["max_concurrent_streams"]}
    plan.routes = [r for r in plan.routes if not r["name"].startswith(HARDENING_ROUTES)]
    for route in plan.routes:
        action = route.get("route")
        if action is None:
            continue
        headers = route["match"].get("headers", [])
        declared = any(h.get("name") == "content-length" and "range_match" in h for h in headers)
        if route["match"].get("path", "").startswith("/inference.") or declared:
            route["typed_per_filter_config"].update(_no_buffer())  # forwarded as it came
        if action.get("cluster") == "triton_grpc_stream":
            action["cluster"] = CLUSTER_TRITON_GRPC
    plan.cluster_extras.pop("per_connection_buffer_limit_bytes", None)


class UnhardenedConfig(AttestedConfig):
    def compile(self, manifest: Manifest | None, server_metadata: dict[str, Any] | None, run_dir: Path) -> None:
        super().compile(manifest, None, run_dir)  # GET /v2 forwarded to Triton, as before
        assert self.plan is not None
        unharden(self.plan)
        opts, plan = self.listener_options, self.plan
        opts.http_filters, opts.routes, opts.hcm_extras = plan.http_filters, plan.routes, plan.hcm_extras
        opts.filter_chain_extras, opts.listener_extras = plan.filter_chain_extras, plan.listener_extras


class UnhardenedGateway(Gateway):
    def __init__(self, config: GatewayConfig, **kwargs: Any) -> None:
        super().__init__(config, attested=UnhardenedConfig(config), **kwargs)


def _wrk(port: int, body: Path, seconds: float, header_length: int | None = None) -> dict[str, float]:
    """wrk at CONNECTIONS connections; a binary-tensor body names its JSON header's length."""
    headers = (("Content-Type", "application/json"),) if header_length is None else (
        ("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", str(header_length)))
    sample = loadgen.wrk(port, loadgen.HttpRequest(INFER, "POST", headers, body), CONNECTIONS, seconds, body.parent)
    return {"rps": sample.rps, "p50_ms": sample.p50_ms, "p99_ms": sample.p99_ms, "requests": sample.requests}


def _h2load(port: int, body: Path, seconds: float, triton: TritonProcess) -> dict[str, float]:
    counter = loadgen.triton_success_counter(triton.http_url, "add_sub")
    try:
        sample = loadgen.h2load_grpc(port, GRPC_INFER, body, CONNECTIONS, seconds, body.parent, counter)
    except loadgen.LoadError:
        if not triton.running:
            triton.check_alive()  # raises with Triton's last log lines: why the run failed
        raise
    return {"rps": sample.rps, "p50_ms": sample.p50_ms, "requests": sample.requests}


def run(rounds: int = 8, seconds: float = 3.0) -> dict[str, Any]:
    missing = [tool for tool in ("wrk", "h2load") if shutil.which(tool) is None]
    if missing:
        return {"skipped": f"{', '.join(missing)} not installed (Debian: wrk, nghttp2-client)"}
    with tempfile.TemporaryDirectory(prefix="ratls-hardening-") as tmp:
        work = Path(tmp)
        small, large, grpc_body = work / "small.json", work / "large.bin", work / "grpc.bin"
        small.write_bytes(SMALL)
        large_bytes, header_length = large_body()
        large.write_bytes(large_bytes)
        grpc_body.write_bytes(grpc_infer_body())
        triton = TritonProcess(TritonConfig(demo_repository()))
        triton.start()
        triton.wait_ready()
        from ratls.platforms.sim.chain import load_or_create
        load_or_create(work / "sim")
        gateways: dict[str, GatewayThread] = {}
        try:
            for label, cls in (("hardened", Gateway), ("unhardened", UnhardenedGateway)):
                gateways[label] = GatewayThread(triton, free_port(), free_port(), work / f"run-{label}", work / "sim",
                                                gateway_cls=cls)
            samples: dict[str, dict[str, list[dict[str, float]]]] = {}
            load = {"http_small": lambda port: _wrk(port, small, seconds),
                    "http_2mib": lambda port: _wrk(port, large, seconds, header_length),
                    "grpc_small": lambda port: _h2load(port, grpc_body, seconds, triton)}
            labels = list(gateways)
            for scenario, measure in load.items():
                for label in labels:  # warm-up, not recorded (and the gRPC runs' rate estimates)
                    measure(gateways[label].gateway.config.listen.port)
                for i in range(rounds):
                    # A B, B A, ...: neither gateway always runs on the warmer (or the noisier) slot
                    for label in labels if i % 2 == 0 else labels[::-1]:
                        gw = gateways[label]
                        envoy = [gw.envoy_pid()]
                        cpu = _cpu_seconds(envoy)
                        row = measure(gw.gateway.config.listen.port)
                        # Envoy's own CPU per request: steadier than req/s on a shared machine,
                        # whose other tenants slow the load generator as much as the proxy
                        row["envoy_cpu_us_per_req"] = (_cpu_seconds(envoy) - cpu) * 1e6 / row["requests"]
                        samples.setdefault(label, {}).setdefault(scenario, []).append(row)
            out: dict[str, Any] = {"rounds": rounds, "seconds": seconds, "connections": CONNECTIONS}
            for scenario in ("http_small", "http_2mib", "grpc_small"):
                med = {label: statistics.median(r["rps"] for r in rows[scenario]) for label, rows in samples.items()}
                row: dict[str, Any] = {f"{label}_rps": med[label] for label in med}
                row["ratio"] = med["hardened"] / med["unhardened"]
                cpu = {label: statistics.median(r["envoy_cpu_us_per_req"] for r in rows[scenario])
                       for label, rows in samples.items()}
                row["envoy_cpu_us_per_req"] = cpu
                row["envoy_cpu_ratio"] = cpu["hardened"] / cpu["unhardened"]
                row["samples_rps"] = {label: [round(r["rps"]) for r in rows[scenario]]
                                      for label, rows in samples.items()}
                if scenario.startswith("http"):
                    for label, rows in samples.items():
                        row[f"{label}_p50_ms"] = statistics.median(r["p50_ms"] for r in rows[scenario])
                        row[f"{label}_p99_ms"] = statistics.median(r["p99_ms"] for r in rows[scenario])
                out[scenario] = row
            return out
        finally:
            for gw in gateways.values():
                gw.stop()
            triton.close()


def main() -> int:
    result = run()
    if "skipped" in result:
        print(f"hardening cost: skipped ({result['skipped']})")
        return 0
    print(f"== hardening cost (wrk / h2load, {result['connections']} connections, {result['rounds']} interleaved "
          f"rounds of {result['seconds']:g}s, A-B/B-A order, medians; gRPC counted from Triton's statistics)")
    print(f"   {'scenario':11} {'hardened':>10} {'unhardened':>11} {'ratio':>7} {'Envoy CPU/req ratio':>20}")
    for scenario in ("http_small", "http_2mib", "grpc_small"):
        row = result[scenario]
        print(f"   {scenario:11} {row['hardened_rps']:10.0f} {row['unhardened_rps']:11.0f} {row['ratio']:7.3f} "
              f"{row['envoy_cpu_ratio']:20.3f}")
    out = Path(__file__).resolve().parent / "results" / "latest.hardening.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0
