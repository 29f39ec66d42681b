"""One client must not be able to take the service down, and nothing denied may be reached by
another way in. Every attack runs against the real stack on loopback for a bounded time from
its own source address while a legitimate client measures what still gets through."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from triton_backend.demo import demo_repository

from .attack import (
    ATTACKER,
    Outcome,
    endless_h2_streams,
    in_background,
    legit_http,
    silent_connections,
    slowloris,
    trickled_bodies,
)
from .load import BODY, unverified
from .stack import Stack, fetch_cert_pem, start_stack
from .test_filters import get, upstream_requests

pytestmark = pytest.mark.slow
RATLS = [sys.executable, "-m", "ratls.cli"]

# Limits scaled down so each attack reaches them in seconds; the mechanisms are the defaults'.
LIMITS = {
    "tls_handshake_timeout": "2s",
    "request_headers_timeout": "2s",
    "upstream_max_requests": 16,
    "upstream_max_streams": 4,
    "max_heap_bytes": "256MiB",
    "access_log_max_bytes": "256KiB",
    "grpc_max_message_bytes": "1MiB",
}


@pytest.fixture(scope="module")
def hstack(sim_state: Path) -> Iterator[Stack]:
    s = start_stack({"filters": {"limits": LIMITS}}, sim_dir=sim_state)
    yield s
    s.stop()


def envoy_rss_bytes(stack: Stack) -> int:
    pid = stack.status()["envoy"]["pid"]
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) * 1024  # type: ignore[union-attr]


def metric(stack: Stack, name: str) -> float:
    m = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+]+)$", stack.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def grpc_channel(stack: Stack) -> grpc.Channel:
    pem = fetch_cert_pem(stack.port).encode()
    return grpc.secure_channel(f"127.0.0.1:{stack.port}", grpc.ssl_channel_credentials(root_certificates=pem),
                               options=[("grpc.ssl_target_name_override", "localhost"),
                                        ("grpc.max_send_message_length", -1)])


def model_infer(channel: grpc.Channel):  # type: ignore[no-untyped-def]
    from tritonclient.grpc import service_pb2

    return channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                               request_serializer=service_pb2.ModelInferRequest.SerializeToString,
                               response_deserializer=service_pb2.ModelInferResponse.FromString)


def infer_code(channel: grpc.Channel, request) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    """The status of one ModelInfer call: OK, or the code it was refused with."""
    try:
        model_infer(channel)(request, timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()


def add_sub_request():  # type: ignore[no-untyped-def]
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name="add_sub")
    for name in ("INPUT0", "INPUT1"):
        t = req.inputs.add(name=name, datatype="FP32", shape=[2])
        t.contents.fp32_contents.extend([1.0, 2.0])
    return req


# ---- 1. a model named like one of Triton's own path segments -------------------------------

@pytest.fixture(scope="module")
def stats_stack(sim_state: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(demo_repository() / "add_sub", repo / "add_sub")
    shutil.copytree(demo_repository() / "add_sub", repo / "stats")
    config = repo / "stats" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "add_sub"', 'name: "stats"'))
    s = start_stack({"triton": {"model_repository": str(repo)}}, sim_dir=sim_state)
    yield s
    s.stop()


def test_model_named_stats_cannot_reach_the_statistics_api(stats_stack: Stack) -> None:
    before = upstream_requests(stats_stack)
    status, data = get(stats_stack.port, "GET", "/v2/models/stats")
    assert status == 403 and b"statistics API is not exposed" in data
    assert upstream_requests(stats_stack) == before, "Triton answered /v2/models/stats"
    # the model itself stays reachable: metadata by its versioned path, inference as usual
    status, data = get(stats_stack.port, "GET", "/v2/models/stats/versions/1")
    assert status == 200 and b'"name":"stats"' in data
    assert get(stats_stack.port, "POST", "/v2/models/stats/infer", BODY)[0] == 200
    assert get(stats_stack.port, "GET", "/v2/models/stats/stats")[0] == 403


# ---- 2. compressed bodies ------------------------------------------------------------------

def test_compressed_bodies_are_refused_before_triton(hstack: Stack) -> None:
    import gzip

    before = upstream_requests(hstack)
    bomb = gzip.compress(b"[" + b"0," * 5_000_000 + b"0]")  # 10 MB inflated from ~10 KB
    status, data = get(hstack.port, "POST", "/v2/models/add_sub/infer", bomb, headers={"Content-Encoding": "gzip"})
    assert status == 415 and b"compressed request bodies are refused" in data
    assert get(hstack.port, "POST", "/v2/models/add_sub/infer", BODY, headers={"Content-Encoding": "identity"})[0] \
        == 200
    after = upstream_requests(hstack)
    assert after["triton_http"] == before["triton_http"] + 1  # only the identity one
    with grpc_channel(hstack) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            model_infer(channel)(add_sub_request(), compression=grpc.Compression.Gzip, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "compressed gRPC messages are refused" in refused.value.details()
        assert upstream_requests(hstack)["triton_grpc"] == after["triton_grpc"]
        assert model_infer(channel)(add_sub_request(), timeout=10).outputs


# ---- 3. bodies that never end: memory stays bounded, small requests keep working -----------

def _under_attack(stack: Stack, attack, seconds: float = 10):  # type: ignore[no-untyped-def]
    """Run *attack* in the background while a legitimate client sends small inference requests;
    return the client's outcome and Envoy's peak RSS."""
    peak = [envoy_rss_bytes(stack)]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], envoy_rss_bytes(stack))
            time.sleep(0.1)

    watcher = in_background(watch)
    attacker = in_background(attack)
    time.sleep(1)
    legit = legit_http(stack.port, seconds, new_connection=False)
    attacker.join(40)
    stop.set()
    watcher.join(5)
    return legit, peak[0]


def test_endless_http2_streams_do_not_exhaust_memory(hstack: Stack) -> None:
    """30 streams on one connection, each declaring 64 MiB and never finishing (~2 GB if held)."""
    resets = metric(hstack, "envoy_envoy_overload_actions_reset_high_memory_stream_count")
    stats: dict[str, int] = {}
    legit, peak = _under_attack(hstack, lambda: stats.update(endless_h2_streams(
        hstack.port, 30, 13, content_length=64 * 2**20)))
    assert stats["bytes"] > 2 * 2**30, stats  # the attacker really sent more than the heap can hold
    assert legit.success_rate >= 0.99, (legit.ok, legit.failed, legit.errors)
    assert peak < 420 * 2**20, f"Envoy reached {peak / 2**20:.0f} MiB (heap capped at 256 MiB)"
    assert metric(hstack, "envoy_envoy_overload_actions_reset_high_memory_stream_count") > resets
    assert hstack.status()["envoy"]["restarts"] == 0


def test_endless_chunked_bodies_are_cut_early(hstack: Stack) -> None:
    """30 HTTP/1.1 connections with endless chunked bodies, and 30 HTTP/2 streams without a length."""
    stats: dict[str, int] = {}

    def both() -> None:
        h2 = in_background(lambda: stats.update(endless_h2_streams(hstack.port, 30, 13)))
        trickled_bodies(hstack.port, 30, 13, chunked=True, chunk=b" " * 65536, pause=0)
        h2.join(30)
    legit, peak = _under_attack(hstack, both)
    assert legit.success_rate >= 0.99, (legit.ok, legit.failed, legit.errors)
    assert peak < 300 * 2**20, f"Envoy reached {peak / 2**20:.0f} MiB"
    assert stats["reset_by_server"] > 100  # each refused (413) at the 1 MiB chunked limit


def test_routes_without_a_body_answer_at_once(hstack: Stack) -> None:
    """Evidence API, health and refusals answer on headers: no 8 MiB buffer held until the body ends."""
    for path in ("/nope", "/healthz", "/v2/repository/index", "/.well-known/ratls/certificate"):
        raw = socket.create_connection(("127.0.0.1", hstack.port), timeout=5)
        with unverified().wrap_socket(raw) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                      + b"4000\r\n" + b" " * 0x4000 + b"\r\n")
            s.settimeout(5)
            assert s.recv(64).startswith(b"HTTP/1.1 "), path


# ---- 4. connection slots: silent sockets and slowloris ------------------------------------

def test_silent_connections_and_slowloris_do_not_lock_out_clients(hstack: Stack) -> None:
    stats: dict[str, int] = {}
    silent = in_background(lambda: stats.update(silent_connections(hstack.port, 2500, 12)))
    loris = in_background(lambda: slowloris(hstack.port, 200, 12))
    time.sleep(2)
    legit = legit_http(hstack.port, 8, path="/v2/health/ready", body=None)
    silent.join(30)
    loris.join(30)
    assert legit.success_rate >= 0.99, (legit.ok, legit.failed, legit.errors)
    # 2,500 silent sockets (more than the old 1,024 slots), each closed by the handshake timeout
    assert stats["opened"] >= 2500 and stats["closed_by_server"] >= 2000, stats


# ---- 5. the upstream budget: trickled bodies and idle streams ------------------------------

def test_trickled_bodies_hold_no_upstream_slot(hstack: Stack) -> None:
    attack = in_background(lambda: trickled_bodies(hstack.port, 64, 10))  # 4x the 16 upstream slots
    time.sleep(2)
    legit = legit_http(hstack.port, 6, new_connection=False)
    attack.join(30)
    assert legit.success_rate >= 0.99, (legit.ok, legit.failed, legit.errors)


def test_idle_streams_cannot_take_the_unary_budget(hstack: Stack) -> None:
    from tritonclient.grpc import service_pb2

    release = threading.Event()

    def idle_requests() -> Iterator[service_pb2.ModelInferRequest]:
        release.wait(20)
        return
        yield  # pragma: no cover - a generator that never yields until released

    attacker = grpc_channel(hstack)
    stream = attacker.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                    request_serializer=service_pb2.ModelInferRequest.SerializeToString,
                                    response_deserializer=service_pb2.ModelStreamInferResponse.FromString)
    calls = [stream(idle_requests()) for _ in range(40)]  # 10x the stream budget, 2.5x the unary one
    time.sleep(2)
    out = Outcome()
    with grpc_channel(hstack) as channel:
        infer = model_infer(channel)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            try:
                out.record(bool(infer(add_sub_request(), timeout=10).outputs))
            except grpc.RpcError as exc:
                out.record(False, f"{exc.code()}: {exc.details()}")
            time.sleep(0.02)
    release.set()
    for call in calls:
        call.cancel()
    attacker.close()
    assert out.success_rate >= 0.99 and out.ok > 20, (out.ok, out.failed, out.errors)


# ---- 6. attested limits that must be enforced ----------------------------------------------

def test_grpc_message_limit_is_enforced(hstack: Stack) -> None:
    before = upstream_requests(hstack)
    req = add_sub_request()
    req.raw_input_contents.append(b"\0" * (2 * 2**20))
    with grpc_channel(hstack) as channel, pytest.raises(grpc.RpcError) as refused:
        model_infer(channel)(req, timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert upstream_requests(hstack)["triton_grpc"] == before["triton_grpc"]


def test_listener_rate_limit_is_consumed(sim_state: Path) -> None:
    s = start_stack({"filters": {"limits": {"rate_limit": {"requests_per_second": 5, "burst": 5},
                                            "per_client_rate_limit": {"requests_per_second": 1000}}}},
                    sim_dir=sim_state)
    try:
        statuses = [get(s.port, "GET", "/v2/health/ready")[0] for _ in range(40)]
        assert statuses.count(429) >= 25 and statuses[0] == 200
        with grpc_channel(s) as channel:
            codes = [infer_code(channel, add_sub_request()) for _ in range(20)]
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes  # a gRPC refusal says what it is (HTTP 200 underneath)
        assert metric(s, "envoy_http_local_rate_limit_rate_limited") >= 25
    finally:
        s.stop()


def test_default_policy_does_not_throttle_one_busy_client(hstack: Stack) -> None:
    import http.client

    conn = http.client.HTTPSConnection("127.0.0.1", hstack.port, context=unverified(), timeout=10)
    statuses = []
    for _ in range(3000):  # well above the old 2,000/s per-client default within a second or two
        conn.request("GET", "/v2/health/ready")
        resp = conn.getresponse()
        resp.read()
        statuses.append(resp.status)
    conn.close()
    assert set(statuses) == {200}


# ---- 7. fresh evidence is shared fairly ----------------------------------------------------

def test_fresh_evidence_is_not_starved_by_one_client(hstack: Stack, sim_policy: Path) -> None:
    stop = threading.Event()
    attacker = Outcome()

    def flood() -> None:
        import http.client
        while not stop.is_set():
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", hstack.port, context=unverified(), timeout=5,
                                                   source_address=(ATTACKER, 0))
                conn.request("GET", "/.well-known/ratls/evidence?nonce=" + os.urandom(16).hex())
                attacker.record(conn.getresponse().status == 200)
                conn.close()
            except OSError as exc:
                attacker.record(False, str(exc))
            time.sleep(0.1)  # 10 requests per second

    thread = in_background(flood)
    time.sleep(1)
    results = [subprocess.run([*RATLS, "verify", hstack.url, "--policy", str(sim_policy), "--fresh"],
                              capture_output=True, text=True, timeout=60) for _ in range(8)]
    stop.set()
    thread.join(10)
    assert [r.returncode for r in results] == [0] * 8, [r.stderr[-300:] for r in results if r.returncode]
    assert attacker.failed > 0  # the flood itself was limited


# ---- 9. bounded access log, admin only on the private socket -------------------------------

def test_access_log_is_bounded(hstack: Stack) -> None:
    import http.client

    log = hstack.workdir / "run" / "access.log"
    conn = http.client.HTTPSConnection("127.0.0.1", hstack.port, context=unverified(), timeout=10)
    biggest = 0
    for i in range(6000):  # ~2 MB of log lines
        conn.request("GET", "/v2/health/ready")
        conn.getresponse().read()
        if i % 200 == 0 and log.exists():
            biggest = max(biggest, log.stat().st_size)
    conn.close()
    time.sleep(2.5)
    assert (log.parent / "access.log.1").exists()
    assert metric(hstack, "ratls_access_log_rotations_total") >= 1
    assert biggest < 4 * 256 * 1024 and log.stat().st_size < 4 * 256 * 1024


def test_rotation_is_not_on_the_tcp_operator_port(hstack: Stack) -> None:
    serial = hstack.status()["certificate"]["serial"]
    req = urllib.request.Request(f"http://127.0.0.1:{hstack.metrics_port}/admin/rotate", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code in (404, 405)
    sock = hstack.workdir / "run" / "admin.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    from .stack import admin_request

    time.sleep(1.1)
    # README's command, as written
    done = subprocess.run(["curl", "-s", "--unix-socket", str(sock), "-X", "POST", "http://localhost/admin/rotate"],
                          capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout)["serial"] == serial + 1
    time.sleep(1.1)
    codes = [admin_request(sock, "/admin/rotate")[0] for _ in range(10)]
    assert codes[0] == 200 and codes.count(429) >= 8  # at most one rotation per second
    assert hstack.status()["certificate"]["serial"] == serial + 1 + codes.count(200)


# ---- 10. Triton's own ports refuse what the policy denies ---------------------------------

def test_triton_refuses_denied_apis_to_local_processes(hstack: Stack) -> None:
    triton = hstack.status()["triton"]
    base = f"http://127.0.0.1:{triton['http_port']}"
    for method, path in (("POST", "/v2/repository/index"), ("POST", "/v2/repository/models/add_sub/load"),
                         ("POST", "/v2/systemsharedmemory/region/r/register"), ("GET", "/v2/models/stats"),
                         ("GET", "/v2/models/add_sub/config"), ("POST", "/v2/logging"), ("GET", "/v2/trace/setting")):
        req = urllib.request.Request(base + path, method=method, data=b"{}" if method == "POST" else None,
                                     headers={"ratls-denied": "never sent", "Ratls-Denied": "never"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 403 and b"restricted" in refused.value.read(), path
    with urllib.request.urlopen(base + "/v2/health/ready", timeout=10) as ok:  # allowed APIs: unrestricted
        assert ok.status == 200
    grpcurl = str(Path(sys.executable).parent / "grpcurl")
    from triton_backend.descriptors import protoset_bytes
    protoset = hstack.workdir / "triton.protoset"
    protoset.write_bytes(protoset_bytes())
    result = subprocess.run([grpcurl, "-plaintext", "-protoset", str(protoset), "-d", '{"name":"r","key":"/x"}',
                             f"127.0.0.1:{triton['grpc_port']}",
                             "inference.GRPCInferenceService/SystemSharedMemoryRegister"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "restricted" in result.stderr
    # Presenting the keys themselves, byte for byte, does not work either: HTTP/1.1 cannot carry
    # the line feed of the HTTP key, HTTP/2 (gRPC) forbids the capitals of the gRPC key.
    with socket.create_connection(("127.0.0.1", triton["http_port"]), timeout=10) as c:
        c.sendall(b"GET /v2/models/stats HTTP/1.1\r\nHost: x\r\nratls-denied: never\nsent\r\n\r\n")
        assert not c.recv(200).startswith(b"HTTP/1.1 200")
    assert _raw_grpc_status(triton["grpc_port"], "/inference.GRPCInferenceService/SystemSharedMemoryStatus",
                            [("triton-grpc-protocol-Ratls-Denied", "never")]) != "0"
    assert _raw_grpc_status(triton["grpc_port"], "/inference.GRPCInferenceService/SystemSharedMemoryStatus",
                            [("triton-grpc-protocol-ratls-denied", "never")]) == "14"  # restricted


def _raw_grpc_status(port: int, path: str, extra: list[tuple[str, str]]) -> str:
    """A unary call from a raw HTTP/2 client that sends headers exactly as given (no validation);
    the grpc-status it got, or 'reset'."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False,
        validate_inbound_headers=False))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "x"),
                          ("content-type", "application/grpc"), ("te", "trailers"), *extra])
    conn.send_data(1, b"\0\0\0\0\0", end_stream=True)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(conn.data_to_send())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                return "closed"
            for event in conn.receive_data(data):
                if isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    return "reset"
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    status = dict(event.headers).get(b"grpc-status")
                    if status is not None:
                        return status.decode()
            s.sendall(conn.data_to_send())
    return "timeout"


def test_python_backend_shared_memory_is_private(hstack: Stack) -> None:
    get(hstack.port, "POST", "/v2/models/add_sub/infer", BODY)
    pid = hstack.status()["triton"]["pid"]
    mapped = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.getpgid(int(proc.name)) == pid:
                    mapped |= {line.split()[-1] for line in (proc / "maps").read_text().splitlines()
                               if "/dev/shm/" in line}
            except OSError:
                continue
    regions = [(name, stat.S_IMODE(Path(name).stat().st_mode)) for name in mapped if Path(name).exists()]
    assert regions, "no python-backend regions found"
    assert all(mode & 0o077 == 0 for _, mode in regions), regions


# ---- 11. what the gateway tells an outsider -------------------------------------------------

def test_answers_leak_nothing_internal(hstack: Stack) -> None:
    status, data = get(hstack.port, "POST", "/v2/models/add_sub/infer", BODY)
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert status == 200 and b"server: ratls-gateway" in head and b"envoy" not in head
    entry = None
    for _ in range(25):
        lines = (hstack.workdir / "run" / "access.log").read_text().splitlines()
        entry = next((json.loads(x) for x in reversed(lines) if '"/v2/models/add_sub/infer"' in x), None)
        if entry:
            break
        time.sleep(0.2)
    # the logged request names its model (in the path for HTTP) and its category:API route
    assert entry is not None and entry["route"] == "inference:model-infer" and "model" in entry


def test_upstream_outage_is_a_json_error_without_internals(sim_state: Path) -> None:
    s = start_stack({"triton": {"restart_backoff_max": "30s"}}, sim_dir=sim_state)
    try:
        os.kill(s.status()["triton"]["pid"], 9)
        deadline = time.monotonic() + 10
        status, data = 200, b""
        while time.monotonic() < deadline and status == 200:
            status, data = get(s.port, "POST", "/v2/models/add_sub/infer", BODY)
        body = data.split(b"\r\n\r\n", 1)[1]
        assert status == 503, data[:300]
        assert json.loads(body) == {"error": "the model server is unavailable or overloaded; retry later"}
        assert b"reset" not in body and b"upstream connect" not in body
    finally:
        s.stop()


# ---- 8. the local proxy honours the policy's max_age after its first verification ----------

def test_proxy_reverifies_at_max_age(hstack: Stack, sim_policy: Path, tmp_path: Path) -> None:
    import http.client

    import yaml

    from .stack import admin_request
    from .test_clients import ProxyThread

    doc = yaml.safe_load(sim_policy.read_text())
    doc["claims"]["max_age"] = "4s"
    policy = tmp_path / "short.yaml"
    policy.write_text(yaml.safe_dump(doc))
    time.sleep(1.1)  # admin rotations are at most one per second
    assert admin_request(hstack.workdir / "run" / "admin.sock", "/admin/rotate")[0] == 200  # a fresh iat
    time.sleep(1.5)  # Envoy serves the new certificate to new connections
    proxy = ProxyThread(f"127.0.0.1:{hstack.port}", policy)

    def ready() -> int:
        host, port = proxy.address.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("GET", "/v2/health/ready")
            return conn.getresponse().status
        except (OSError, http.client.HTTPException):
            return 0
        finally:
            conn.close()
    try:
        assert ready() == 200
        time.sleep(5)  # the certificate is still valid for hours; the policy's max_age is not
        assert ready() == 0  # refused: the cached verdict lapsed and re-verification fails
        assert proxy.proxy.stats.refused >= 1
        assert "max-age" in str(proxy.proxy.last_refusal)
    finally:
        proxy.stop()


def test_malformed_requests_are_not_quoted_back_or_logged(hstack: Stack) -> None:
    for request in (b"GET /x?token=s3cr3t-in-line HTTP/1.1\x01\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cr3t-in-header\x00\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", hstack.metrics_port), timeout=10) as c:
            c.sendall(request)
            reply = c.recv(4096)
        assert reply.startswith(b"HTTP/1.0 400") and b"s3cr3t" not in reply, reply
    time.sleep(0.5)
    log = hstack.log()
    assert "s3cr3t" not in log
    lines = [json.loads(line) for line in log.splitlines() if "aiohttp" in line]
    assert lines and all(line["logger"] == "aiohttp.server" for line in lines)  # structured, one line each
