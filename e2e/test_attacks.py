"""Attacks at the real listener: stale certificates, downgraded TCB, and bounded fuzzing of
TLS ClientHellos and HTTP requests. Each asserts the attack failed and nothing reached Triton."""

from __future__ import annotations

import json
import random
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ratls.testing.tls_server import serve_certificate

from .load import unverified
from .stack import Stack

pytestmark = pytest.mark.slow
RATLS = [sys.executable, "-m", "ratls.cli"]


def upstream_total(stack: Stack) -> int:
    text = stack.metrics()
    return sum(int(v) for v in re.findall(
        r'envoy_cluster_upstream_rq_total\{envoy_cluster_name="triton_(?:http|grpc)"\} (\d+)', text))


@pytest.fixture
def stale_server(tmp_path: Path, sim_state: Path) -> Iterator[int]:
    """A TLS server replaying a once-valid RA-TLS certificate (and its key) after it expired."""
    cert, key = tmp_path / "old.pem", tmp_path / "old.key"
    result = subprocess.run([*RATLS, "cert", "issue", "--platform", "sim", "--sim-dir", str(sim_state),
                             "--out-cert", str(cert), "--out-key", str(key), "--lifetime", "10m",
                             "--at", "2026-01-01T00:00:00Z"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with serve_certificate(cert, key) as port:
        yield port


def test_stale_certificate_replay_refused(stale_server: int, sim_policy: Path) -> None:
    result = subprocess.run([*RATLS, "verify", f"https://127.0.0.1:{stale_server}", "--policy", str(sim_policy),
                             "--json"], capture_output=True, text=True)
    assert result.returncode == 1
    failures = json.loads(result.stdout)["failures"]
    assert "certificate.validity" in failures and "claims.validity" in failures


def test_downgraded_tcb_refused(stack: Stack, sim_policy: Path, tmp_path: Path) -> None:
    doc = yaml.safe_load(sim_policy.read_text())
    doc["sev-snp"]["min_tcb"] = {"bl": 3, "tee": 0, "snp": 9, "ucode": 115}  # the sim reports snp=8
    policy = tmp_path / "tcb.yaml"
    policy.write_text(yaml.safe_dump(doc))
    result = subprocess.run([*RATLS, "verify", stack.url, "--policy", str(policy), "--json"], capture_output=True,
                            text=True)
    assert result.returncode == 1
    assert json.loads(result.stdout)["failures"] == ["policy.snp.min-tcb"]


def _client_hello() -> bytes:
    """A real ClientHello, captured from Python's TLS stack through a memory BIO."""
    ctx = unverified()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def test_fuzzed_client_hellos(stack: Stack) -> None:
    rng = random.Random(20261126)
    hello = _client_hello()
    before = stack.status()
    upstream = upstream_total(stack)
    for i in range(150):
        data = bytearray(hello)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if i % 5 == 0:
            data = data[: rng.randrange(len(data))]
        if i % 7 == 0:
            data = bytearray(rng.randbytes(rng.randint(1, 600)))
        with socket.create_connection(("127.0.0.1", stack.port), timeout=5) as sock:
            try:
                sock.sendall(bytes(data))
                sock.shutdown(socket.SHUT_WR)
                sock.recv(4096)
            except OSError:
                pass
    after = stack.status()
    assert after["ready"] and after["envoy"]["pid"] == before["envoy"]["pid"]
    assert after["envoy"]["restarts"] == before["envoy"]["restarts"]
    assert upstream_total(stack) == upstream


def test_fuzzed_http_requests(stack: Stack) -> None:
    rng = random.Random(7)
    base = (b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}")
    specials = [b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                b"GET /v2/repository/index HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00" * 100,
                b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 100_000 + b"\r\n\r\n",
                b"GET /v2\x00/health HTTP/1.1\r\nHost: x\r\n\r\n", b"BREW /v2 HTCPCP/1.0\r\n\r\n",
                b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nmy_header: 1\r\n\r\n"]
    before = stack.status()
    statuses = []
    for i in range(120):
        if i < len(specials):
            request = specials[i]
        else:
            data = bytearray(base)
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            request = bytes(data)
        try:
            with socket.create_connection(("127.0.0.1", stack.port), timeout=5) as raw:
                with unverified().wrap_socket(raw) as tls:
                    tls.sendall(request)
                    reply = tls.recv(200)
            statuses.append(int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0)
        except (OSError, ssl.SSLError):
            statuses.append(0)
    after = stack.status()
    assert after["ready"] and after["envoy"]["pid"] == before["envoy"]["pid"]
    # Mutations that keep a well-formed request reach Triton, which may answer 500 to a garbled
    # inference body; the gateway itself must never fail: no local 5xx, no upstream failure.
    import time
    time.sleep(1)
    log = [json.loads(line) for line in (stack.workdir / "run" / "access.log").read_text().splitlines()]
    for entry in log:
        if entry["status"] and int(entry["status"]) >= 500:
            assert entry["upstream"] == "triton_http" and entry["flags"] == "-", entry
    assert stack.status()["triton"]["ready"]
    # The specials that must be refused were refused.
    assert statuses[1] == 403 and statuses[6] == 400
