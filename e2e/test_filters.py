"""The default-deny Triton API policy, enforced by the real Envoy in front of the real Triton."""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from triton_backend.catalog import GRPC_METHODS, HTTP_ROUTES, Category

from .load import unverified
from .stack import Stack, free_port, start_stack

pytestmark = pytest.mark.slow

FILTERS = {
    # Narrower than the served repository (repeat is served but not exposed): gRPC model checks on.
    "models": ["add_sub", "text_transform"],
    "limits": {
        "max_request_bytes_by_category": {"inference": "1MiB"},
        "rate_limit": {"requests_per_second": 1000, "burst": 1000},
        "per_client_rate_limit": {"requests_per_second": 20, "burst": 40},
    },
}
INFER = json.dumps({"inputs": [
    {"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [1]},
    {"name": "INPUT1", "shape": [1], "datatype": "FP32", "data": [2]}]}).encode()


@pytest.fixture(scope="module")
def fstack(sim_state: Path) -> Iterator[Stack]:
    s = start_stack({"filters": FILTERS}, sim_dir=sim_state)
    yield s
    s.stop()


def raw_request(port: int, request: bytes, source: str = "127.0.0.1") -> tuple[int, bytes]:
    """Send bytes exactly as written (no client-side path normalisation)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    with unverified().wrap_socket(sock) as tls:
        tls.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


def get(port: int, method: str, path: str, body: bytes | None = None, source: str = "127.0.0.1",
        headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    req = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
    return raw_request(port, req, source)


def wait_log(stack: Stack, predicate, timeout: float = 10.0) -> dict:  # type: ignore[no-untyped-def]
    """Envoy flushes its access log on a timer: poll for the entry."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = stack.workdir / "run" / "access.log"
        if path.exists():
            entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            found = [e for e in entries if predicate(e)]
            if found:
                return found[-1]
        time.sleep(0.2)
    raise AssertionError("access-log entry not found")


def upstream_requests(stack: Stack) -> dict[str, int]:
    text = stack.metrics()
    out = {}
    for cluster in ("triton_http", "triton_grpc"):
        m = re.search(r'envoy_cluster_upstream_rq_total\{envoy_cluster_name="' + cluster + r'"\} (\d+)', text)
        out[cluster] = int(m.group(1)) if m else 0
    return out


def example_path(template: str) -> str:
    return (template.replace("[/versions/{version}]", "").replace("{model}", "add_sub")
            .replace("{region}", "r0"))


def test_every_http_category(fstack: Stack) -> None:
    allowed = {Category.HEALTH, Category.METADATA, Category.INFERENCE}
    for route in HTTP_ROUTES:
        method = route.methods[0]
        body = INFER if route.category is Category.INFERENCE else (b"{}" if method == "POST" else None)
        before = upstream_requests(fstack)
        status, data = get(fstack.port, method, example_path(route.template), body)
        after = upstream_requests(fstack)
        if route.name == "server-metadata":
            # answered by Envoy from Triton's own answer, without the denied APIs' extensions
            assert status == 200 and after == before
            extensions = json.loads(data.split(b"\r\n\r\n", 1)[1])["extensions"]
            assert "binary_tensor_data" in extensions
            assert not {"model_repository", "system_shared_memory", "cuda_shared_memory", "statistics", "trace",
                        "logging", "model_configuration"} & set(extensions)
        elif route.category in allowed:
            assert status == 200, (route.name, data[:300])
            assert after["triton_http"] == before["triton_http"] + 1
        else:
            assert status in (403, 404), (route.name, status)
            assert after == before, f"{route.name} reached Triton"
            assert b"not exposed" in data or b"not found" in data
            assert b"triton" not in data.split(b"\r\n\r\n", 1)[-1].lower() or b"Triton" in data


def test_every_grpc_method(fstack: Stack, tmp_path: Path) -> None:
    grpcurl = str(Path(sys.executable).parent / "grpcurl")
    allowed = {Category.HEALTH, Category.METADATA, Category.INFERENCE}
    for method in GRPC_METHODS:
        if method.service != "inference.GRPCInferenceService" or method.client_streaming:
            continue
        data = '{"name": "add_sub"}' if method.per_model and method.method != "ModelInfer" else "{}"
        if method.method == "ModelInfer":
            data = json.dumps({"model_name": "add_sub", "inputs": [
                {"name": "INPUT0", "datatype": "FP32", "shape": [1], "contents": {"fp32_contents": [1]}},
                {"name": "INPUT1", "datatype": "FP32", "shape": [1], "contents": {"fp32_contents": [2]}}]})
        if method.method in ("RepositoryModelLoad", "RepositoryModelUnload"):
            data = '{"model_name": "add_sub"}'
        before = upstream_requests(fstack)
        result = subprocess.run([grpcurl, "-insecure", "-d", data, f"127.0.0.1:{fstack.port}",
                                 f"{method.service}/{method.method}"], capture_output=True, text=True, timeout=30)
        after = upstream_requests(fstack)
        if method.category in allowed:
            assert result.returncode == 0, (method.method, result.stderr)
            assert after["triton_grpc"] > before["triton_grpc"]
        else:
            assert "PermissionDenied" in result.stderr, (method.method, result.stderr)
            assert after["triton_grpc"] == before["triton_grpc"], f"{method.method} reached Triton"
    # A served model outside the allow-list is refused by RBAC inside Envoy, over HTTP and gRPC.
    before = upstream_requests(fstack)
    assert get(fstack.port, "GET", "/v2/models/repeat/ready")[0] == 404
    result = subprocess.run([grpcurl, "-insecure", "-d", '{"name": "repeat"}', f"127.0.0.1:{fstack.port}",
                             "inference.GRPCInferenceService/ModelMetadata"], capture_output=True, text=True,
                            timeout=30)
    assert "PermissionDenied" in result.stderr and upstream_requests(fstack) == before


@pytest.mark.parametrize(("path", "expected"), [
    ("/v2/repository/%6dodels/x/load", b"percent"),
    ("//v2/health/ready", b"'//'"),
    ("/v2/models/../repository/index", b"'..'"),
    ("/v2/models/add_sub/ready?debug=1", b"query strings"),
    ("/v2/models/add_sub%2Finfer", b""),  # escaped slash: refused by the connection manager itself
])
def test_path_tricks_refused(fstack: Stack, path: str, expected: bytes) -> None:
    before = upstream_requests(fstack)
    status, data = get(fstack.port, "POST" if "load" in path else "GET", path)
    assert status == 400 and expected in data
    assert upstream_requests(fstack) == before


def test_oversized_body_gets_413(fstack: Stack) -> None:
    before = upstream_requests(fstack)
    big = b'{"inputs":[' + b" " * (2 * 1024 * 1024) + b"]}"
    status, _ = get(fstack.port, "POST", "/v2/models/add_sub/infer", big)
    assert status == 413
    assert upstream_requests(fstack) == before


def test_chunked_infer_reaches_triton_with_content_length(fstack: Stack) -> None:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(INFER[i:i + 7]), INFER[i:i + 7]) for i in range(0, len(INFER), 7))
    request = (b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
               b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    status, data = raw_request(fstack.port, request)
    assert status == 200, data
    last = wait_log(fstack, lambda e: e["route"] == "inference:model-infer" and e["request_content_length"])
    assert last["request_content_length"] == str(len(INFER)) and last["request_transfer_encoding"] is None


def test_rate_limited_client_gets_429_while_another_works(fstack: Stack) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", fstack.port, context=unverified(), timeout=10,
                                       source_address=("127.0.0.3", 0))
    statuses = []
    for _ in range(120):  # keep-alive: far faster than the 20/s refill
        conn.request("GET", "/v2/health/ready")
        resp = conn.getresponse()
        resp.read()
        statuses.append(resp.status)
    conn.close()
    assert 429 in statuses and statuses[0] == 200
    other = get(fstack.port, "GET", "/v2/health/ready", source="127.0.0.4")[0]
    assert other == 200
    time.sleep(3)  # the bucket refills
    assert get(fstack.port, "GET", "/v2/health/ready", source="127.0.0.3")[0] == 200


def test_access_log_has_no_bodies(fstack: Stack) -> None:
    get(fstack.port, "POST", "/v2/models/add_sub/infer", INFER, source="127.0.0.5",
        headers={"Authorization": "Bearer s3cr3t-token"})
    wait_log(fstack, lambda e: e["client"] == "127.0.0.5")
    text = (fstack.workdir / "run" / "access.log").read_text()
    assert "s3cr3t" not in text and "INPUT0" not in text
    entry = json.loads(text.splitlines()[-1])
    assert set(entry) >= {"time", "client", "route", "model", "status", "bytes_in", "bytes_out", "duration_ms"}


def test_policy_is_attested(fstack: Stack) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    doc = json.loads(urllib.request.urlopen(f"{fstack.url}/.well-known/ratls/config", context=ctx).read())
    import hashlib

    from ratls.cert import load_x509, parse_ratls
    from triton_backend.manifest import canonical_json

    assert doc["digest"] == "sha256:" + hashlib.sha256(canonical_json(doc["config"])).hexdigest()
    assert doc["config"]["filters"]["models"] == {"add_sub": [], "text_transform": []}
    assert doc["config"]["filters"]["exposure"]["model-repository"] == "deny"
    with socket.create_connection(("127.0.0.1", fstack.port)) as s, ctx.wrap_socket(s) as t:
        cert = parse_ratls(load_x509(t.getpeercert(binary_form=True)))
    assert cert.claims.config == doc["digest"]


class _CaptureTriton(BaseHTTPRequestHandler):
    """A stand-in upstream that records the headers Envoy forwards (Triton cannot show them)."""

    seen: list[dict[str, str]] = []

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/v2":
            self._reply(200, b'{"name":"triton","version":"2.51.0","extensions":[]}')
        else:
            self._reply(200, b"{}")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        if "/repository/" in self.path:
            self._reply(400, b'{"error":"explicit model load / unload is not allowed if polling is enabled"}')
            return
        _CaptureTriton.seen.append({k.lower(): v for k, v in self.headers.items()})
        self._reply(200, b'{"outputs":[]}')

    def log_message(self, *args: object) -> None:
        pass


def test_headers_are_sanitised(sim_state: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CaptureTriton)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    grpc_port = free_port()
    grpc_listener = socket.create_server(("127.0.0.1", grpc_port))  # answers the hardening check's probe
    s = start_stack({"triton": {"mode": "external", "http_port": port, "grpc_port": grpc_port},
                     "filters": {"models": ["add_sub"]}}, sim_dir=sim_state)
    try:
        status, data = get(s.port, "POST", "/v2/models/add_sub/infer", INFER, headers={
            "triton-grpc-protocol-infer-header-size": "1", "Endpoint-Load-Metrics-Format": "text",
            "X-Vertex-Ai-Triton-Redirect": "v2/repository/index", "Inference-Header-Content-Length": "0"})
        assert status == 200, data
        forwarded = _CaptureTriton.seen[-1]
        for header in ("triton-grpc-protocol-infer-header-size", "endpoint-load-metrics-format",
                       "x-vertex-ai-triton-redirect"):
            assert header not in forwarded
        assert forwarded["content-length"] == str(len(INFER)) and "transfer-encoding" not in forwarded
    finally:
        s.stop()
        server.shutdown()
        grpc_listener.close()
