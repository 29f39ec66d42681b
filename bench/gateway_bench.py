"""The benchmark's building blocks: the request bodies, the Python clients of the latency view
(one client at a time: what a script sees, never a throughput figure), plain Envoy's and
nginx's configurations, and the gateway on its own event-loop thread."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import os
import socket
import ssl
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from triton_backend.demo import demo_repository
from triton_backend.launch import TritonProcess, free_port, wait_for_port

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
    # nginx closes a client connection after 1,000 requests (HTTP/2: GOAWAY) by default; Envoy
    # never does, and a load tool that does not reconnect would count the rest as failures
    keepalive_requests 100000000;
    keepalive_timeout 300s;
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
