"""Handshakes with a large attested certificate, on the real stack: TLS 1.3 resumption with
the gateway's own ticket keys (rotated, surviving an Envoy restart) seen by OpenSSL's own
client, and RFC 8879 certificate compression negotiated by a BoringSSL client (curl-impersonate,
through curl_cffi), with the bytes on the wire counted by a relay in between."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .stack import Stack, fetch_cert_pem, start_stack

pytestmark = pytest.mark.slow
ROTATION_S = 10  # the shortest rotation the config accepts: a ticket then resumes for 20 s
REQUEST = b"GET /v2/health/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def tstack(sim_state: Path) -> Iterator[Stack]:
    s = start_stack({"listen": {"session_ticket_rotation": f"{ROTATION_S}s"}}, sim_dir=sim_state)
    yield s
    s.stop()


def s_client(port: int, *session: str) -> str:
    """One connection with OpenSSL's s_client sending one request: its report of the handshake."""
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                          "-ign_eof", *session], input=REQUEST, capture_output=True, timeout=30)
    text = out.stdout.decode(errors="replace")
    assert "HTTP/1.1 200" in text, text[-1500:]
    return text


def resumed(port: int, ticket: Path) -> bool:
    text = s_client(port, "-sess_in", str(ticket))
    assert ("Reused, TLSv1.3" in text) != ("New, TLSv1.3" in text), text[-1500:]
    return "Reused, TLSv1.3" in text


def test_a_ticket_resumes_across_an_envoy_restart_and_expires_with_its_key(tstack: Stack, tmp_path: Path) -> None:
    ticket = tmp_path / "ticket.pem"
    first = s_client(tstack.port, "-sess_out", str(ticket))
    assert "New, TLSv1.3" in first and ticket.stat().st_size > 0
    assert resumed(tstack.port, ticket)
    # Envoy's built-in ticket keys would die with it: ours come back over SDS.
    before = tstack.status()["envoy"]["pid"]
    os.kill(before, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = tstack.status()
        if status["ready"] and status["envoy"]["pid"] not in (None, before):
            break
        time.sleep(0.2)
    assert tstack.status()["envoy"]["pid"] != before
    assert resumed(tstack.port, ticket), "the restarted Envoy lost the ticket keys"
    # Two rotations later the key that sealed the ticket is gone: a full handshake, which works.
    time.sleep(2 * ROTATION_S + 3)
    assert not resumed(tstack.port, ticket)


class CountingRelay:
    """A TCP relay in front of the gateway counting the bytes the server sends per connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent_by_server: list[int] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            up = threading.Thread(target=self._pipe, args=(client, server, None), daemon=True)
            up.start()
            self.sent_by_server.append(self._pipe(server, client, up))

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, other: threading.Thread | None) -> int:
        total = 0
        try:
            while data := src.recv(65536):
                total += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if other is not None:
            other.join(10)
            src.close()
            dst.close()
        return total

    def close(self) -> None:
        self.listener.close()


def _spki_pin(pem: str) -> str:
    spki = x509.load_pem_x509_certificate(pem.encode()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256//" + b64encode(hashlib.sha256(spki).digest()).decode()


def test_the_certificate_goes_out_compressed_to_a_client_that_offers_it(tstack: Stack) -> None:
    from curl_cffi import CurlOpt, requests

    pem = fetch_cert_pem(tstack.port)
    der_bytes = len(ssl.PEM_cert_to_DER_cert(pem))
    relay = CountingRelay(tstack.port)
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", relay.port)) as raw, ctx.wrap_socket(raw) as tls:
            tls.sendall(REQUEST)
            while tls.recv(65536):
                pass
        # BoringSSL offers brotli certificate compression; the pin proves it decompressed our certificate
        answer = requests.get(f"https://127.0.0.1:{relay.port}/v2/health/ready", impersonate="chrome", verify=False,
                              curl_options={CurlOpt.PINNEDPUBLICKEY: _spki_pin(pem)}, timeout=30,
                              headers={"Connection": "close"})
        assert answer.status_code == 200
        deadline = time.monotonic() + 10
        while len(relay.sent_by_server) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        relay.close()
    plain, compressed = relay.sent_by_server[:2]
    assert plain > der_bytes, (plain, der_bytes)  # OpenSSL 3.0 offers no compression: the whole certificate
    assert compressed < plain - der_bytes // 10, (compressed, plain, der_bytes)
    print(f"\nserver bytes per connection: {plain} uncompressed, {compressed} brotli; certificate {der_bytes} B DER")
