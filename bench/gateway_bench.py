"""Data-plane benchmark, all in one run on the same Triton:

  direct   plaintext HTTP/gRPC straight to Triton (loopback)
  envoy    the same Envoy binary with a static config and an ordinary P-256 certificate
  gateway  ratls-gateway (external mode on the same Triton): RA-TLS certificate via SDS

Scenarios: small HTTP/1.1 infer, ~2 MiB binary-tensor HTTP/1.1 infer, small gRPC infer
(keep-alive, several client processes), and new-connection TLS handshakes/s. Reported:
requests/s, p50, p99, server CPU ms per request, and ratios against plain Envoy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import multiprocessing as mp
import os
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.supervisor import locate_envoy
from triton_backend.demo import demo_repository
from triton_backend.launch import TritonConfig, TritonProcess, free_port, wait_for_port

SMALL = json.dumps({"inputs": [
    {"name": "INPUT0", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]},
    {"name": "INPUT1", "shape": [4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}).encode()
LARGE_ELEMS = 262144  # 2 x 1 MiB FP32 tensors = 2 MiB of binary tensor data


def large_body() -> tuple[bytes, int]:
    binary = {"binary_data_size": LARGE_ELEMS * 4}
    header = json.dumps({"inputs": [
        {"name": "INPUT0", "shape": [LARGE_ELEMS], "datatype": "FP32", "parameters": binary},
        {"name": "INPUT1", "shape": [LARGE_ELEMS], "datatype": "FP32", "parameters": binary}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}).encode()
    data = np.arange(LARGE_ELEMS, dtype=np.float32).tobytes()
    return header + data + data, len(header)


def _ctx() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _http_worker(args: tuple[str, int, bool, str, float]) -> list[float]:
    host, port, tls, kind, seconds = args
    body, header_len = (SMALL, 0) if kind == "small" else large_body()
    headers = {"Content-Type": "application/json" if kind == "small" else "application/octet-stream"}
    if kind == "large":
        headers["Inference-Header-Content-Length"] = str(header_len)
    conn = (http.client.HTTPSConnection(host, port, context=_ctx(), timeout=30) if tls
            else http.client.HTTPConnection(host, port, timeout=30))
    lat: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        conn.request("POST", "/v2/models/add_sub/infer", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
        lat.append(time.perf_counter() - start)
    conn.close()
    return lat


def _grpc_worker(args: tuple[str, int, str | None, float]) -> list[float]:
    import tritonclient.grpc as tgrpc

    host, port, cert_path, seconds = args
    client = tgrpc.InferenceServerClient(f"{host}:{port}", ssl=cert_path is not None, root_certificates=cert_path,
                                         channel_args=[("grpc.ssl_target_name_override", "localhost")])
    a = tgrpc.InferInput("INPUT0", [4], "FP32")
    a.set_data_from_numpy(np.array([1, 2, 3, 4], dtype=np.float32))
    b = tgrpc.InferInput("INPUT1", [4], "FP32")
    b.set_data_from_numpy(np.array([1, 1, 1, 1], dtype=np.float32))
    lat: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        client.infer("add_sub", [a, b])
        lat.append(time.perf_counter() - start)
    client.close()
    return lat


def _handshake_worker(args: tuple[str, int, float]) -> list[float]:
    host, port, seconds = args
    ctx = _ctx()
    lat: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        with socket.create_connection((host, port), timeout=10) as sock:
            with ctx.wrap_socket(sock) as tls:
                tls.getpeercert(binary_form=True)
        lat.append(time.perf_counter() - start)
    return lat


def _cpu_seconds(pids: list[int]) -> float:
    """utime + stime of each process (not of its children: the pool's clients are ours)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _tree(pid: int) -> list[int]:
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        out += _tree(int(child))
    return out


def run_scenario(pool: Any, worker: Any, args: tuple[Any, ...], procs: int,
                 server_pids: list[tuple[int, bool]]) -> dict[str, float]:
    """server_pids: (pid, with its children) - Triton's python stubs count, our client pool does not."""
    pids = [p for root, tree in server_pids for p in (_tree(root) if tree else [root])]
    cpu0 = _cpu_seconds(pids)
    wall0 = time.perf_counter()
    results = pool.map(worker, [args] * procs)
    wall = time.perf_counter() - wall0
    cpu = _cpu_seconds(pids) - cpu0
    lat = sorted(x for r in results for x in r)
    n = len(lat)
    return {"requests": n, "rps": n / wall, "p50_ms": statistics.median(lat) * 1000,
            "p99_ms": lat[max(0, int(n * 0.99) - 1)] * 1000, "server_cpu_ms_per_req": cpu * 1000 / max(n, 1)}


def plain_envoy_bootstrap(port: int, admin: Path, triton_http: int, triton_grpc: int, cert: Path, key: Path) -> dict:
    h2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}}}

    def cluster(name: str, p: int, h2opts: bool) -> dict:
        c = {"name": name, "type": "STATIC", "connect_timeout": "2s", "load_assignment": {"cluster_name": name,
             "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                 "address": "127.0.0.1", "port_value": p}}}}]}]}}
        if h2opts:
            c["typed_extension_protocol_options"] = h2
        return c

    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager",
           "stat_prefix": "plain", "codec_type": "AUTO",
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
               {"match": {"prefix": "/", "headers": [{"name": "content-type",
                                                     "string_match": {"prefix": "application/grpc"}}]},
                "route": {"cluster": "grpc", "timeout": "0s"}},
               {"match": {"prefix": "/"}, "route": {"cluster": "http", "timeout": "300s"}}]}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    tls = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
           "common_tls_context": {"tls_params": {"tls_minimum_protocol_version": "TLSv1_3"},
                                  "alpn_protocols": ["h2", "http/1.1"],
                                  "tls_certificates": [{"certificate_chain": {"filename": str(cert)},
                                                        "private_key": {"filename": str(key)}}]}}
    return {"admin": {"address": {"pipe": {"path": str(admin)}}},
            "static_resources": {
                "listeners": [{"name": "plain", "address": {"socket_address": {"address": "127.0.0.1",
                                                                              "port_value": port}},
                               "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                               "typed_config": hcm}],
                                                  "transport_socket": {"name": "envoy.transport_sockets.tls",
                                                                       "typed_config": tls}}]}],
                "clusters": [cluster("http", triton_http, False), cluster("grpc", triton_grpc, True)]}}


NGINX_CONF = """
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    client_max_body_size 64m;
    # keep bodies in memory: nginx's workers (another user) cannot write our private temp dir,
    # and Envoy does not spool to disk either
    client_body_buffer_size 16m;
    proxy_buffering off;
    proxy_max_temp_file_size 0;
    upstream triton_http {{ server 127.0.0.1:{http}; keepalive 32; }}
    upstream triton_grpc {{ server 127.0.0.1:{grpc}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        location / {{
            proxy_pass http://triton_http;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /inference.GRPCInferenceService/ {{
            grpc_pass grpc://triton_grpc;
        }}
    }}
}}
"""


def start_nginx(work: Path, port: int, triton: TritonProcess, cert: Path, key: Path) -> subprocess.Popen[bytes] | None:
    """nginx (Debian) as the commonly used TLS terminator, same worker count as Envoy (1)."""
    import shutil

    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], capture_output=True, check=False,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        return None
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=work, http=triton.config.http_port, grpc=triton.config.grpc_port,
                                      port=port, cert=cert, key=key))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return proc


def ordinary_cert(workdir: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cp, kp = workdir / "plain.pem", workdir / "plain.key"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return cp, kp


class GatewayThread:
    """The gateway in external mode on its own event loop thread."""

    def __init__(self, triton: TritonProcess, port: int, metrics_port: int, run_dir: Path, sim_dir: Path,
                 filters: dict[str, Any] | None = None, platform: str = "sim", gateway_cls: Any = None) -> None:
        from gateway.app import Gateway
        from gateway.config import load_config

        env = {"RATLS_GATEWAY__LISTEN__ADDRESS": "127.0.0.1", "RATLS_GATEWAY__LISTEN__PORT": str(port),
               "RATLS_GATEWAY__IDENTITY__PLATFORM": platform,
               "RATLS_GATEWAY__IDENTITY__SIM_STATE_DIR": str(sim_dir),
               "RATLS_GATEWAY__TRITON__MODE": "external",
               "RATLS_GATEWAY__TRITON__MODEL_REPOSITORY": str(demo_repository()),
               "RATLS_GATEWAY__TRITON__HTTP_PORT": str(triton.config.http_port),
               "RATLS_GATEWAY__TRITON__GRPC_PORT": str(triton.config.grpc_port),
               "RATLS_GATEWAY__CONTROL__METRICS_PORT": str(metrics_port),
               "RATLS_GATEWAY__CONTROL__RUN_DIR": str(run_dir), "RATLS_GATEWAY__ENVOY__CONCURRENCY": "1"}
        config = load_config(None, env)
        if filters is not None:
            from gateway.config import with_filters

            config = with_filters(config, filters)
        self.gateway = (gateway_cls or Gateway)(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.gateway.start(), self.loop).result(180)

    def envoy_pid(self) -> int:
        assert self.gateway.envoy is not None and self.gateway.envoy.pid is not None
        return self.gateway.envoy.pid

    def rotate_seconds(self, n: int = 5) -> float:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fut = asyncio.run_coroutine_threadsafe(self._rotate_acked(), self.loop)
            fut.result(60)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    async def _rotate_acked(self) -> None:
        await self.gateway.rotate()
        await self.gateway.ads.wait_acked(self.gateway._snapshot_version, timeout=30)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.gateway.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def filters_cost(pool: Any, triton: TritonProcess, on: tuple[str, int, str, Any], off: tuple[str, int, str, Any],
                 rounds: int = 6, seconds: float = 4.0) -> dict[str, dict[str, float]]:
    """The default policy's cost, measured the steadier way: the same gateway with filters on
    and off, alternated round by round, medians compared; plus Envoy's own CPU per request."""
    out: dict[str, dict[str, float]] = {}
    for scenario in ("http_small", "http_2mib", "grpc_small"):
        samples: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
        for _ in range(rounds):
            for label, (host, port, pem, gw) in (("on", on), ("off", off)):
                if scenario.startswith("http"):
                    size = "small" if scenario == "http_small" else "large"
                    row = run_scenario(pool, _http_worker, (host, port, True, size, seconds), 2,
                                       [(gw.envoy_pid(), False)])
                else:
                    row = run_scenario(pool, _grpc_worker, (host, port, pem, seconds), 2, [(gw.envoy_pid(), False)])
                samples[label].append((row["rps"], row["server_cpu_ms_per_req"]))
        med = {k: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for k, v in samples.items()}
        out[scenario] = {"rps_ratio": med["on"][0] / med["off"][0],
                         "envoy_cpu_per_request_ratio": med["on"][1] / med["off"][1], "rounds": rounds}
    return out


def start_gateway(triton: TritonProcess, work: Path, label: str,
                  **options: Any) -> tuple[GatewayThread, int, Path, int]:
    """A gateway in front of *triton*: (thread, port, served certificate as PEM, its DER size)."""
    port = free_port()
    gw = GatewayThread(triton, port, free_port(), work / f"run-{label}", work / "sim", **options)
    with socket.create_connection(("127.0.0.1", port)) as s, _ctx().wrap_socket(s) as t:
        der = t.getpeercert(binary_form=True)
    pem = work / f"gw-{label}.pem"
    pem.write_text(ssl.DER_cert_to_PEM_cert(der))
    return gw, port, pem, len(der)


def tdx_handshakes(pool: Any, triton: TritonProcess, work: Path, snp_port: int, rounds: int = 4,
                   seconds: float = 4.0) -> dict[str, float]:
    """What the larger TDX certificate (quote + embedded Intel collateral) costs a TLS handshake:
    a gateway on sim-tdx against the SNP-format gateway, alternated, medians."""
    gw, port, _pem, size = start_gateway(triton, work, "tdx", platform="sim-tdx")
    try:
        samples: dict[str, list[float]] = {"tdx": [], "snp": []}
        for _ in range(rounds):
            for label, p in (("tdx", port), ("snp", snp_port)):
                row = run_scenario(pool, _handshake_worker, ("127.0.0.1", p, seconds), 2, [])
                samples[label].append(row["rps"])
        tdx, snp = statistics.median(samples["tdx"]), statistics.median(samples["snp"])
        return {"tdx_cert_bytes": size, "tdx_handshakes_per_s": tdx, "snp_handshakes_per_s": snp,
                "ratio": tdx / snp, "rounds": rounds}
    finally:
        gw.stop()


def run(seconds: float = 5.0, procs: int = 2, rounds: int = 2) -> dict[str, Any]:
    results: dict[str, Any] = {"seconds_per_run": seconds, "client_processes": procs, "rounds": rounds}
    # Fork the client processes before this process starts any gRPC machinery (the gateway's
    # xDS server): forking a process with live gRPC threads is unsafe.
    pool = mp.get_context("fork").Pool(procs)
    with pool, tempfile.TemporaryDirectory(prefix="ratls-bench-") as tmp:
        work = Path(tmp)
        triton = TritonProcess(TritonConfig(demo_repository()))
        triton.start()
        triton.wait_ready()
        envoy_proc = None
        nginx_proc = None
        gw = None
        gw_off = None
        try:
            cert, key = ordinary_cert(work)
            plain_port = free_port()
            boot = work / "plain-envoy.json"
            boot.write_text(json.dumps(plain_envoy_bootstrap(plain_port, work / "plain-admin.sock",
                                                             triton.config.http_port, triton.config.grpc_port, cert,
                                                             key)))
            envoy_proc = subprocess.Popen([str(locate_envoy()), "-c", str(boot), "--disable-hot-restart",
                                           "--concurrency", "1", "--log-level", "error"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for_port(plain_port)
            nginx_port = free_port()
            nginx_proc = start_nginx(work, nginx_port, triton, cert, key)
            from ratls.platforms.sim.chain import load_or_create
            load_or_create(work / "sim")
            gw, gw_port, gw_cert, results["gateway_cert_bytes"] = start_gateway(triton, work, "on")
            gw_off, gw_off_port, gw_off_cert, _ = start_gateway(triton, work, "off", filters={"enabled": False})
            results["plain_cert_bytes"] = len(x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(
                serialization.Encoding.DER))
            targets = {
                "direct": ("127.0.0.1", triton.config.http_port, triton.config.grpc_port, False, None,
                           [(triton.pid, True)]),
                "envoy": ("127.0.0.1", plain_port, plain_port, True, str(cert),
                          [(triton.pid, True), (envoy_proc.pid, False)]),
                **({"nginx": ("127.0.0.1", nginx_port, nginx_port, True, str(cert),
                              [(triton.pid, True), (nginx_proc.pid, True)])} if nginx_proc else {}),
                # the control plane runs in this process (no request passes through it)
                "gateway": ("127.0.0.1", gw_port, gw_port, True, str(gw_cert),
                            [(triton.pid, True), (gw.envoy_pid(), False), (os.getpid(), False)]),
                # the same gateway with the request policy switched off (filters.enabled: false)
                "gateway_nofilters": ("127.0.0.1", gw_off_port, gw_off_port, True, str(gw_off_cert),
                                      [(triton.pid, True), (gw_off.envoy_pid(), False), (os.getpid(), False)]),
            }
            table: dict[str, dict[str, list[dict[str, float]]]] = {}
            for _ in range(rounds):
                for name, (host, hport, gport, tls, pem, pids) in targets.items():
                    rows = table.setdefault(name, {})
                    rows.setdefault("http_small", []).append(
                        run_scenario(pool, _http_worker, (host, hport, tls, "small", seconds), procs, pids))
                    rows.setdefault("http_2mib", []).append(
                        run_scenario(pool, _http_worker, (host, hport, tls, "large", seconds), procs, pids))
                    rows.setdefault("grpc_small", []).append(
                        run_scenario(pool, _grpc_worker, (host, gport, pem, seconds), procs, pids))
                    if tls:
                        rows.setdefault("handshakes", []).append(
                            run_scenario(pool, _handshake_worker, (host, hport, seconds), procs, pids))
            # Best round per scenario: the least disturbed by other tenants of a shared machine.
            best = {name: {sc: max(runs, key=lambda r: r["rps"]) for sc, runs in rows.items()}
                    for name, rows in table.items()}
            results["targets"] = best
            ratios: dict[str, dict[str, float]] = {}
            for name in best:
                ratios[name] = {sc: best[name][sc]["rps"] / best["envoy"][sc]["rps"]
                                for sc in best[name] if sc in best["envoy"]}
            results["rps_ratio_vs_plain_envoy"] = ratios
            results["filters_cost_ratio"] = {sc: best["gateway"][sc]["rps"] / best["gateway_nofilters"][sc]["rps"]
                                             for sc in best["gateway"]}
            results["filters_cost_interleaved"] = filters_cost(
                pool, triton, ("127.0.0.1", gw_port, str(gw_cert), gw),
                ("127.0.0.1", gw_off_port, str(gw_off_cert), gw_off))
            results["rotation_seconds_median"] = gw.rotate_seconds()
            results["tdx_handshakes"] = tdx_handshakes(pool, triton, work, gw_port)
        finally:
            for g in (gw, gw_off):
                if g is not None:
                    g.stop()
            for proc in (envoy_proc, nginx_proc):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)
            triton.close()
    return results


def filters_only(rounds: int = 10, seconds: float = 4.0) -> dict[str, Any]:
    """Only the filter-cost measurement (make bench-filters): one Triton, the gateway with the
    default policy and the same gateway with filters off, alternated round by round."""
    pool = mp.get_context("fork").Pool(2)
    with pool, tempfile.TemporaryDirectory(prefix="ratls-bench-") as tmp:
        work = Path(tmp)
        triton = TritonProcess(TritonConfig(demo_repository()))
        triton.start()
        triton.wait_ready()
        gateways: list[GatewayThread] = []
        try:
            from ratls.platforms.sim.chain import load_or_create
            load_or_create(work / "sim")
            ends = []
            for label, filters in (("on", None), ("off", {"enabled": False})):
                gw, port, pem, _ = start_gateway(triton, work, label, filters=filters)
                gateways.append(gw)
                ends.append(("127.0.0.1", port, str(pem), gw))
            return {"filters_cost_interleaved": filters_cost(pool, triton, ends[0], ends[1], rounds=rounds,
                                                             seconds=seconds)}
        finally:
            for g in gateways:
                g.stop()
            triton.close()
