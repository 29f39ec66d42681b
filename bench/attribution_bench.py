"""Where the default policy's per-request cost goes: the gateway with its default policy
against the same gateway with one piece taken out at a time, Envoy's own CPU per request under
wrk at saturation, interleaved rounds, medians (`make bench-attribution`). A variant is a bench
artefact, never served: it only shows what each piece costs.

Read the `cpu` column: (variant - default) / default, so a piece that costs 5% of Envoy's CPU
per request shows as about -0.05 when taken out."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.gateway_bench import SMALL, _cpu_seconds, ordinary_cert, start_gateway
from bench.native_bench import INFER
from bench.plain_envoy import PlainEnvoy
from filters.compile import FilterPlan
from gateway.app import Gateway
from gateway.attested_config import AttestedConfig
from gateway.config import GatewayConfig
from triton_backend.demo import demo_repository
from triton_backend.launch import TritonConfig, TritonProcess
from triton_backend.manifest import Manifest

Mutation = Callable[[FilterPlan], None]


def _drop_filter(name: str) -> Mutation:
    def mutate(plan: FilterPlan) -> None:
        plan.http_filters = [f for f in plan.http_filters if f["name"] != name]
        for route in plan.pre_routes + plan.routes:
            route.get("typed_per_filter_config", {}).pop(name, None)
        for extra in plan.route_extras.values():
            extra.get("typed_per_filter_config", {}).pop(name, None)
    return mutate


def _drop_hcm(*keys: str) -> Mutation:
    def mutate(plan: FilterPlan) -> None:
        for key in keys:
            plan.hcm_extras.pop(key, None)
    return mutate


def _drop_stream_duration(plan: FilterPlan) -> None:
    plan.hcm_extras["common_http_protocol_options"].pop("max_stream_duration", None)


def _drop_routes(prefixes: tuple[str, ...]) -> Mutation:
    def mutate(plan: FilterPlan) -> None:
        plan.pre_routes = [r for r in plan.pre_routes if not r["name"].startswith(prefixes)]
        plan.routes = [r for r in plan.routes if not r["name"].startswith(prefixes)]
    return mutate


def _drop_connection_limits(plan: FilterPlan) -> None:
    plan.network_filters = []
    plan.filter_chain_extras = {}


def _drop_overload(plan: FilterPlan) -> None:
    plan.overload_manager = {}


VARIANTS: dict[str, Mutation] = {
    "no header_mutation": _drop_filter("envoy.filters.http.header_mutation"),
    "no buffer filter": _drop_filter("envoy.filters.http.buffer"),
    "no access log": _drop_hcm("access_log"),
    "no local_reply_config": _drop_hcm("local_reply_config"),
    "no max_stream_duration": _drop_stream_duration,
    "no path-hygiene routes": _drop_routes(("hygiene:",)),
    "no query/compression routes": _drop_routes(("deny:query", "deny:compressed", "deny:grpc-compressed")),
    "no connection_limit, handshake timeout": _drop_connection_limits,
    "no overload manager": _drop_overload,
}


def variant_gateway(mutate: Mutation) -> type[Gateway]:
    class VariantConfig(AttestedConfig):
        def compile(self, manifest: Manifest | None, server_metadata: dict[str, Any] | None, run_dir: Path) -> None:
            super().compile(manifest, server_metadata, run_dir)
            assert self.plan is not None
            mutate(self.plan)
            self._onto_listener(self.plan)

    class VariantGateway(Gateway):
        def __init__(self, config: GatewayConfig, **kwargs: Any) -> None:
            super().__init__(config, attested=VariantConfig(config), **kwargs)

    return VariantGateway


def run(rounds: int | None = None, seconds: int | None = None) -> dict[str, Any]:
    missing = loadgen.missing_tools()
    if missing:
        return {"skipped": f"{', '.join(missing)} not installed (Debian: wrk, nghttp2-client)"}
    rounds = rounds or int(os.environ.get("BENCH_ROUNDS", "3"))
    seconds = seconds or int(os.environ.get("BENCH_SECONDS", "2"))
    with tempfile.TemporaryDirectory(prefix="ratls-attribution-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        from ratls.platforms.sim.chain import load_or_create

        load_or_create(work / "sim")
        triton = stack.enter_context(TritonProcess(TritonConfig(demo_repository())))
        cert, key = ordinary_cert(work)
        envoy = stack.enter_context(PlainEnvoy(work, triton, cert, key))
        targets: dict[str, tuple[int, Callable[[], list[int]]]] = {"plain Envoy": (envoy.port, lambda: [envoy.pid])}
        variants: dict[str, dict[str, Any]] = {"default policy": {}, "filters off": {"filters": {"enabled": False}},
                                               **{n: {"gateway_cls": variant_gateway(m)} for n, m in VARIANTS.items()}}
        for i, (name, options) in enumerate(variants.items()):
            gw, port, _pem, _ = start_gateway(triton, work, f"v{i}", **options)
            stack.callback(gw.stop)
            targets[name] = (port, lambda gw=gw: [gw.envoy_pid()])
        (work / "small.json").write_bytes(SMALL)
        requests = {"health": loadgen.HttpRequest("/v2/health/ready"),
                    "http_small": loadgen.HttpRequest(INFER, "POST", (("Content-Type", "application/json"),),
                                                      work / "small.json")}
        samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
        names = list(targets)
        for i in range(rounds + 1):  # round 0 warms up and is not recorded
            for scenario, req in requests.items():
                for name in names if i % 2 else names[::-1]:
                    port, pids = targets[name]
                    cpu0 = _cpu_seconds(pids())
                    sample = loadgen.wrk(port, req, 16, seconds if i else 1, work)
                    cpu = (_cpu_seconds(pids()) - cpu0) * 1e6 / max(sample.requests, 1)
                    if i:
                        samples.setdefault((name, scenario), []).append((sample.rps, cpu))
    return summarise(samples, names, list(requests), rounds, seconds)


def summarise(samples: dict[tuple[str, str], list[tuple[float, float]]], names: list[str], scenarios: list[str],
              rounds: int, seconds: int) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": rounds, "seconds": seconds, "connections": 16, "rows": []}
    med = {key: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for key, v in samples.items()}
    for name in names:
        row: dict[str, Any] = {"variant": name}
        for scenario in scenarios:
            rps, cpu = med[(name, scenario)]
            base_rps, base_cpu = med[("default policy", scenario)]
            row[scenario] = {"rps": rps, "cpu_us_per_req": cpu, "rps_vs_default": rps / base_rps,
                             "cpu_vs_default": cpu / base_cpu - 1}
        out["rows"].append(row)
    return out


def main() -> int:
    result = run()
    if "skipped" in result:
        print(f"attribution: skipped ({result['skipped']})")
        return 0
    print(f"== where the default policy's cost goes (wrk, {result['connections']} connections, {result['rounds']} "
          f"interleaved rounds of {result['seconds']} s, medians; Envoy CPU per request, change against the default)")
    print(f"   {'variant':40} {'health us/req':>13} {'change':>7} {'infer us/req':>12} {'change':>7}")
    for row in result["rows"]:
        h, s = row["health"], row["http_small"]
        print(f"   {row['variant']:40} {h['cpu_us_per_req']:13.0f} {h['cpu_vs_default']:+7.3f} "
              f"{s['cpu_us_per_req']:12.0f} {s['cpu_vs_default']:+7.3f}")
    out = Path(__file__).resolve().parent / "results" / "latest.attribution.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0
