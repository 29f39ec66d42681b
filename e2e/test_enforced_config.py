"""The attested security config may never claim more than is enforced.

The walk below reads the canonical config the gateway attests (``/.well-known/ratls/config``,
whose digest is in the certificate's claims), flattens it to its leaves, and runs one probe per
leaf against the real stack: a limit exceeded is refused, a denied category is refused with
Triton's request counters unchanged, an allowed one reaches Triton. A new field without a probe
fails the walk, so the attested config cannot again overstate what Envoy does."""

from __future__ import annotations

import gzip
import http.client
import json
import re
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from triton_backend.catalog import HTTP_ROUTES, Category

from .load import BODY, unverified
from .stack import Stack, admin_request, start_stack
from .test_filters import get, raw_request, upstream_requests
from .test_hardening import add_sub_request, grpc_channel, infer_code, metric

pytestmark = pytest.mark.slow

LIMITS = {
    "max_request_bytes": "64KiB", "max_request_bytes_by_category": {"inference": "256KiB"},
    "max_chunked_request_bytes": "32KiB", "grpc_max_message_bytes": "128KiB",
    "request_timeout": "4s", "stream_idle_timeout": "3s", "request_headers_timeout": "2s",
    "tls_handshake_timeout": "2s", "idle_timeout": "2s", "max_connections": 300, "max_concurrent_streams": 7,
    "max_request_headers_kb": 16, "max_headers_count": 30, "upstream_max_requests": 16, "upstream_max_streams": 3,
    "max_heap_bytes": "256MiB", "access_log_max_bytes": "64KiB",
    "rate_limit": {"requests_per_second": 300, "burst": 300},
    "per_client_rate_limit": {"requests_per_second": 100, "burst": 100},
}
FILTERS = {"models": ["add_sub", "text_transform"], "limits": LIMITS}  # repeat is served, not exposed


@pytest.fixture(scope="module")
def wstack(sim_state: Path) -> Iterator[Stack]:
    s = start_stack({"filters": FILTERS}, sim_dir=sim_state)
    yield s
    s.stop()


def attested(stack: Stack) -> dict[str, Any]:
    with urllib.request.urlopen(f"{stack.url}/.well-known/ratls/config", context=unverified(), timeout=10) as r:
        return json.loads(r.read())["config"]


def leaves(doc: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(doc, dict) and doc and prefix != "filters.models":  # the model allow-list is one value
        out: dict[str, Any] = {}
        for key, value in doc.items():
            out.update(leaves(value, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: doc}


# ---- probes: each takes the stack and the attested value, and proves it on the wire ---------

def _status(stack: Stack, method: str, path: str, body: bytes | None = None, **kw: Any) -> int:
    return get(stack.port, method, path, body, **kw)[0]


def _unchanged(stack: Stack, action: Callable[[], Any]) -> Any:
    before = upstream_requests(stack)
    result = action()
    assert upstream_requests(stack) == before, "the request reached Triton"
    return result


def probe_enabled(stack: Stack, value: bool) -> None:
    assert value is True
    assert _unchanged(stack, lambda: _status(stack, "POST", "/v2/repository/index", b"{}")) == 403


def probe_exposure(category: str) -> Callable[[Stack, str], None]:
    def probe(stack: Stack, value: str) -> None:
        routes = [r for r in HTTP_ROUTES if r.category.value == category]
        assert routes, category
        route = routes[0]
        path = route.template.replace("[/versions/{version}]", "").replace("{model}", "add_sub").replace(
            "{region}", "r0")
        method = route.methods[0]
        body = BODY if route.category is Category.INFERENCE else (b"{}" if method == "POST" else None)
        if value == "allow":
            before = upstream_requests(stack)["triton_http"]
            assert _status(stack, method, path, body) == 200, path
            if route.name != "server-metadata":  # answered by Envoy from Triton's own answer
                assert upstream_requests(stack)["triton_http"] == before + 1
        else:
            assert _unchanged(stack, lambda: _status(stack, method, path, body)) in (403, 404), path
    return probe


def probe_models(stack: Stack, value: Any) -> None:
    assert value == {"add_sub": [], "text_transform": []}
    assert _status(stack, "POST", "/v2/models/add_sub/infer", BODY) == 200
    assert _unchanged(stack, lambda: _status(stack, "GET", "/v2/models/repeat/ready")) == 404


def probe_models_scope(stack: Stack, value: str) -> None:
    assert value == "http, grpc unary, grpc stream first message"
    req = add_sub_request()
    req.model_name = "repeat"  # served, not exposed
    with grpc_channel(stack) as channel:
        assert _unchanged(stack, lambda: infer_code(channel, req)) == grpc.StatusCode.PERMISSION_DENIED


def probe_strip_headers(stack: Stack, value: list[str]) -> None:
    # What Triton receives cannot be seen with the real Triton: the capture upstream of
    # test_filters.test_headers_are_sanitised proves the removal; here, that the set is the default.
    assert set(value) >= {"endpoint-load-metrics-format", "x-vertex-ai-triton-redirect"}
    assert "test_headers_are_sanitised" in Path(__file__).with_name("test_filters.py").read_text()


def probe_strip_prefixes(stack: Stack, value: list[str]) -> None:
    assert value == ["triton-grpc-protocol-"]
    assert "triton-grpc-protocol-infer-header-size" in Path(__file__).with_name("test_filters.py").read_text()


def _size(stack: Stack, path: str, method: str, limit: int) -> None:
    ok = b'{"inputs":[' + b" " * (limit - 40) + b"]}" if "infer" in path else None
    too_big = b" " * (limit + 1)
    assert _unchanged(stack, lambda: _status(stack, method, path, too_big)) == 413
    if ok is not None:
        assert _status(stack, method, path, ok) in (200, 400)  # within the limit: Triton judges it


def probe_max_request_bytes(stack: Stack, value: int) -> None:
    _size(stack, "/v2/health/ready", "GET", value)


def probe_by_category(stack: Stack, value: int) -> None:
    _size(stack, "/v2/models/add_sub/infer", "POST", value)


def probe_chunked(stack: Stack, value: int) -> None:
    def chunked(n: int) -> int:
        body = b'{"inputs":[' + b" " * (n - 13) + b"]}"
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 4096]), body[i:i + 4096]) for i in range(0, n, 4096))
        return raw_request(stack.port, b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                           b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks +
                           b"0\r\n\r\n")[0]
    assert _unchanged(stack, lambda: chunked(value + 1)) == 413
    assert chunked(value - 100) in (200, 400)


def probe_grpc_message(stack: Stack, value: int) -> None:
    req = add_sub_request()
    req.raw_input_contents.append(b"\0" * (value + 1))
    with grpc_channel(stack) as channel:
        assert _unchanged(stack, lambda: infer_code(channel, req)) == grpc.StatusCode.RESOURCE_EXHAUSTED


def probe_grpc_scope(stack: Stack, value: str) -> None:
    assert value == "unary"  # ModelStreamInfer is not buffered; the limit covers unary calls (probed above)


def _silence_until_closed(stack: Stack, data: bytes, tls: bool, limit: float) -> float:
    raw = socket.create_connection(("127.0.0.1", stack.port), timeout=limit + 5)
    start = time.monotonic()
    sock: socket.socket = unverified().wrap_socket(raw) if tls else raw
    try:
        if data:
            sock.sendall(data)
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        sock.close()
    return time.monotonic() - start


def probe_handshake_timeout(stack: Stack, value: float) -> None:
    took = _silence_until_closed(stack, b"", tls=False, limit=value)
    assert value - 0.5 <= took <= value + 2, took


def probe_headers_timeout(stack: Stack, value: float) -> None:
    took = _silence_until_closed(stack, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n", tls=True, limit=value)
    assert value - 0.5 <= took <= value + 2, took


def probe_idle_timeout(stack: Stack, value: float) -> None:
    # An idle connection is closed gracefully: Envoy's drain period (5 s) and delayed close (1 s)
    # follow the idle timeout.
    took = _silence_until_closed(stack, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n", tls=True,
                                 limit=value + 7)
    assert value - 0.5 <= took <= value + 7, took


def probe_request_timeout(stack: Stack, value: float) -> None:
    """The whole exchange is bounded, body upload included (a trickled body is cut)."""
    raw = socket.create_connection(("127.0.0.1", stack.port), timeout=value + 10)
    start = time.monotonic()
    with unverified().wrap_socket(raw) as s:
        s.sendall(b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        reply = b""
        s.settimeout(0.5)
        while time.monotonic() - start < value + 5 and not reply:
            try:
                s.sendall(b" ")
                reply = s.recv(200)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except OSError:
                break
    took = time.monotonic() - start
    assert value - 0.5 <= took <= value + 3, took
    assert not reply or reply.startswith(b"HTTP/1.1 408") or reply.startswith(b"HTTP/1.1 504"), reply[:40]


def _stream_infer(channel: grpc.Channel, release: threading.Event):  # type: ignore[no-untyped-def]
    from tritonclient.grpc import service_pb2

    def idle() -> Iterator[Any]:
        yield add_sub_request()  # one message opens the upstream stream (the model check reads it)
        release.wait(30)
    call = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                 request_serializer=service_pb2.ModelInferRequest.SerializeToString,
                                 response_deserializer=service_pb2.ModelStreamInferResponse.FromString)
    return call(idle())


def probe_stream_idle_timeout(stack: Stack, value: float) -> None:
    release = threading.Event()
    with grpc_channel(stack) as channel:
        start = time.monotonic()
        call = _stream_infer(channel, release)
        with pytest.raises(grpc.RpcError):
            for _ in call:  # the answer to the first message, then nothing until the timeout
                pass
        took = time.monotonic() - start
        release.set()
    assert value - 0.5 <= took <= value + 3, took


def probe_upstream_streams(stack: Stack, value: int) -> None:
    release = threading.Event()
    with grpc_channel(stack) as channel:
        calls = [_stream_infer(channel, release) for _ in range(value + 3)]
        time.sleep(1.5)
        codes = []
        for call in calls:
            if call.done():
                codes.append(call.code())
        release.set()
        for call in calls:
            call.cancel()
    # the streams over the budget are refused at once; those within it stay open
    assert len(codes) == 3 and all(c == grpc.StatusCode.UNAVAILABLE for c in codes), codes


def probe_upstream_requests(stack: Stack, value: int) -> None:
    clusters = envoy_admin(stack, "/clusters")
    for name in ("triton_http", "triton_grpc"):
        assert f"{name}::default_priority::max_requests::{value}" in clusters
    # Exceeding it takes requests slow inside Triton; the trickled-body attack test shows that a
    # client cannot fill it from outside (test_hardening.test_trickled_bodies_hold_no_upstream_slot).


def probe_max_connections(stack: Stack, value: int) -> None:
    socks = []
    try:
        for _ in range(value + 20):
            socks.append(socket.create_connection(("127.0.0.1", stack.port), timeout=5,
                                                  source_address=("127.0.0.70", 0)))
        time.sleep(0.5)
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        assert 20 <= closed <= 25, closed  # exactly the connections over the limit were refused
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5)
    assert _status(stack, "GET", "/v2/health/ready") == 200


def probe_concurrent_streams(stack: Stack, value: int) -> None:
    import h2.connection
    import h2.events
    import h2.settings

    ctx = unverified()
    ctx.set_alpn_protocols(["h2"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", stack.port), timeout=5)) as s:
        conn = h2.connection.H2Connection()
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        for event in conn.receive_data(s.recv(65536)):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                setting = event.changed_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS]
                assert setting.new_value == value
                return
    raise AssertionError("no SETTINGS frame")


def probe_headers_kb(stack: Stack, value: int) -> None:
    big = {"X-Big": "a" * (value * 1024 + 10)}
    assert _unchanged(stack, lambda: _status(stack, "GET", "/v2/health/ready", headers=big)) == 431


def probe_headers_count(stack: Stack, value: int) -> None:
    many = {f"X-H{i}": "1" for i in range(value + 1)}
    assert _unchanged(stack, lambda: _status(stack, "GET", "/v2/health/ready", headers=many)) == 431


def envoy_admin(stack: Stack, path: str) -> Any:
    return admin_request(stack.workdir / "run" / "envoy-admin.sock", path, "GET")[1]


def probe_heap(stack: Stack, value: int) -> None:
    dump = envoy_admin(stack, "/config_dump")
    text = json.dumps(next(c for c in dump["configs"] if "BootstrapConfigDump" in c["@type"]))
    assert f'"max_heap_size_bytes": "{value}"' in text
    assert "reset_high_memory_stream" in text and "http1_server_abort_dispatch" in text
    assert metric(stack, "envoy_overload_envoy_resource_monitors_fixed_heap_pressure") < 100
    # Driving it over the cap: test_hardening.test_endless_http2_streams_do_not_exhaust_memory.


def probe_access_log_cap(stack: Stack, value: int) -> None:
    before = metric(stack, "ratls_access_log_rotations_total")
    conn = http.client.HTTPSConnection("127.0.0.1", stack.port, context=unverified(), timeout=10,
                                       source_address=("127.0.0.71", 0))
    for _ in range(value // 250 + 50):  # more log lines than the cap holds
        conn.request("GET", "/v2/health/ready")
        conn.getresponse().read()
    conn.close()
    time.sleep(2.5)
    assert metric(stack, "ratls_access_log_rotations_total") > before
    assert (stack.workdir / "run" / "access.log").stat().st_size < 4 * value


def probe_compressed(stack: Stack, value: str) -> None:
    assert value == "refuse"
    body = gzip.compress(BODY)
    assert _unchanged(stack, lambda: _status(stack, "POST", "/v2/models/add_sub/infer", body,
                                             headers={"Content-Encoding": "gzip"})) == 415


def _burst(stack: Stack, n: int, source: str) -> list[int]:
    conn = http.client.HTTPSConnection("127.0.0.1", stack.port, context=unverified(), timeout=10,
                                       source_address=(source, 0))
    out = []
    for _ in range(n):
        conn.request("GET", "/v2/health/ready")
        resp = conn.getresponse()
        resp.read()
        out.append(resp.status)
    conn.close()
    return out


def probe_rate_limit(stack: Stack, value: Any) -> None:
    """Ten addresses, each well under its own bucket, together over the listener's. Each address
    sends from its own thread: one sequential loop on a loaded 2-core machine can stay under the
    listener's refill rate (300/s) and never empty its bucket."""
    time.sleep(1.5)
    before = metric(stack, "envoy_http_local_rate_limit_rate_limited")
    first = _burst(stack, 1, "127.0.1.0")
    with ThreadPoolExecutor(10) as pool:  # 90 per address < the per-client burst of 100
        rounds = list(pool.map(lambda i: _burst(stack, 90, f"127.0.1.{i}"), range(1, 11)))
    statuses = first + [status for burst in rounds for status in burst]
    assert 429 in statuses and statuses[0] == 200, statuses[:20]
    assert metric(stack, "envoy_http_local_rate_limit_rate_limited") > before
    time.sleep(1.5)


def probe_per_client(stack: Stack, value: Any) -> None:
    time.sleep(1.5)
    statuses = _burst(stack, int(LIMITS["per_client_rate_limit"]["burst"]) + 60, "127.0.0.72")  # type: ignore[index]
    assert statuses[0] == 200 and 429 in statuses
    assert _status(stack, "GET", "/v2/health/ready", source="127.0.0.73") == 200


def probe_access_log(stack: Stack, value: bool) -> None:
    assert value is True
    _status(stack, "GET", "/v2/health/ready", source="127.0.0.74")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if '"client":"127.0.0.74"' in (stack.workdir / "run" / "access.log").read_text():
            return
        time.sleep(0.2)
    raise AssertionError("no access-log entry")


def probe_auth(stack: Stack, value: Any) -> None:
    assert value is None  # no client authentication: a request without credentials is served
    assert _status(stack, "POST", "/v2/models/add_sub/infer", BODY) == 200


def probe_listen_port(stack: Stack, value: int) -> None:
    assert value == stack.port and _status(stack, "GET", "/v2/health/ready") == 200


def probe_tls_version(stack: Stack, value: str) -> None:
    assert value == "1.3"
    ctx = unverified()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", stack.port), timeout=5)):
            pass


def probe_upstream_mode(stack: Stack, value: str) -> None:
    assert value == "managed" and stack.status()["triton"]["pid"]


def probe_upstream_host(stack: Stack, value: str) -> None:
    triton = stack.status()["triton"]
    listening = Path("/proc/net/tcp").read_text() + Path("/proc/net/tcp6").read_text()
    for port in (triton["http_port"], triton["grpc_port"]):
        # every listening socket on the port is 127.0.0.1 (or its IPv6-mapped form)
        sockets = re.findall(rf"^\s*\d+: ([0-9A-F]+):{port:04X} [0-9A-F]+:0000 0A", listening, re.M)
        assert sockets and all(a in ("0100007F", "0000000000000000FFFF00000100007F") for a in sockets), (port, sockets)
    assert value == "127.0.0.1"


def probe_repository_change(stack: Stack, value: str) -> None:
    # Editing the walk's repository would stop every other probe: e2e/test_model_update.py edits
    # its own copy and shows the refusal (503 until reverted or re-attested); here, the default.
    assert value == "refuse"
    assert "test_edited_repository_is_refused_until_reverted" in Path(__file__).with_name(
        "test_model_update.py").read_text()


def probe_ticket_rotation(stack: Stack, value: int) -> None:
    assert stack.status()["session_tickets"]["rotation_s"] == value


def probe_ticket_age(stack: Stack, value: int) -> None:
    from .test_tls_handshakes import new_ticket, resumed

    # Tickets resume here; that one stops resuming once its key is dropped, two rotations on, is
    # shown on a stack with a 10 s rotation by e2e/test_tls_handshakes.py (two hours is no test).
    assert stack.status()["session_tickets"]["max_ticket_age_s"] == value
    assert resumed(stack.port, new_ticket(stack.port, stack.workdir / "probe-ticket.pem"))
    assert "test_rotation_keeps_the_previous_key_then_drops_it_before_the_ticket_expires" in Path(
        __file__).with_name("test_tls_handshakes.py").read_text()


def probe_per_certificate(stack: Stack, value: bool) -> None:
    # Rotating the walk's certificate would disturb the other probes: e2e/test_tls_handshakes.py
    # rotates its own stack's and shows the old certificate's tickets refused.
    assert value is True
    assert "test_a_new_certificate_ends_every_session_of_the_old_one" in Path(__file__).with_name(
        "test_tls_handshakes.py").read_text()


PROBES: dict[str, Callable[[Stack, Any], None]] = {
    "listen.session_resumption.ticket_key_rotation_s": probe_ticket_rotation,
    "listen.session_resumption.max_ticket_age_s": probe_ticket_age,
    "listen.session_resumption.per_certificate": probe_per_certificate,
    "listen.port": probe_listen_port, "listen.tls_min_version": probe_tls_version,
    "upstreams.mode": probe_upstream_mode, "upstreams.host": probe_upstream_host,
    "upstreams.on_repository_change": probe_repository_change,
    "filters.enabled": probe_enabled, "filters.models": probe_models, "filters.models_scope": probe_models_scope,
    "filters.strip_headers": probe_strip_headers, "filters.strip_header_prefixes": probe_strip_prefixes,
    **{f"filters.exposure.{c.value}": probe_exposure(c.value) for c in Category},
    "filters.limits.max_request_bytes": probe_max_request_bytes,
    "filters.limits.max_request_bytes_by_category.inference": probe_by_category,
    "filters.limits.max_chunked_request_bytes": probe_chunked,
    "filters.limits.grpc_max_message_bytes": probe_grpc_message,
    "filters.limits.grpc_max_message_bytes_scope": probe_grpc_scope,
    "filters.limits.request_timeout_s": probe_request_timeout,
    "filters.limits.stream_idle_timeout_s": probe_stream_idle_timeout,
    "filters.limits.request_headers_timeout_s": probe_headers_timeout,
    "filters.limits.tls_handshake_timeout_s": probe_handshake_timeout,
    "filters.limits.idle_timeout_s": probe_idle_timeout,
    "filters.limits.max_connections": probe_max_connections,
    "filters.limits.max_concurrent_streams": probe_concurrent_streams,
    "filters.limits.max_request_headers_kb": probe_headers_kb,
    "filters.limits.max_headers_count": probe_headers_count,
    "filters.limits.upstream_max_requests": probe_upstream_requests,
    "filters.limits.upstream_max_streams": probe_upstream_streams,
    "filters.limits.max_heap_bytes": probe_heap,
    "filters.limits.access_log_max_bytes": probe_access_log_cap,
    "filters.limits.compressed_requests": probe_compressed,
    "filters.limits.rate_limit.requests_per_second": probe_rate_limit,
    "filters.limits.rate_limit.burst": probe_rate_limit,
    "filters.limits.per_client_rate_limit.requests_per_second": probe_per_client,
    "filters.limits.per_client_rate_limit.burst": probe_per_client,
    "filters.access_log": probe_access_log, "filters.auth": probe_auth,
}


def test_every_attested_field_has_a_probe(wstack: Stack) -> None:
    fields = leaves(attested(wstack))
    missing = sorted(set(fields) - set(PROBES))
    assert not missing, f"attested but never shown to be enforced: {missing}"


def test_every_attested_field_is_enforced(wstack: Stack) -> None:
    fields = leaves(attested(wstack))
    failures = []
    ran: set[int] = set()
    floods = ("rate_limit", "access_log_max_bytes")
    for path in sorted(fields, key=lambda p: (any(f in p for f in floods), p)):  # the floods last
        probe = PROBES[path]
        if id(probe) in ran and "rate_limit" in path:
            continue  # one probe covers both values of a bucket
        ran.add(id(probe))
        try:
            probe(wstack, fields[path])
        except Exception as exc:  # noqa: BLE001 - every field's verdict, not only the first
            failures.append(f"{path} = {fields[path]!r}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)
