"""Handshakes with a large attested certificate, on the real stack: TLS 1.3 resumption with
the gateway's own ticket keys (rotated, surviving an Envoy restart) seen by OpenSSL's own
client, and RFC 8879 certificate compression negotiated by a BoringSSL client (curl-impersonate,
through curl_cffi), with the bytes on the wire counted by a relay in between."""

from __future__ import annotations

import hashlib
import os
import re
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


def new_ticket(port: int, path: Path) -> Path:
    text = s_client(port, "-sess_out", str(path))
    assert "New, TLSv1.3" in text and path.stat().st_size > 0, text[-1500:]
    return path


def ticket_key_name(ticket: Path) -> str:
    """The first 16 bytes of the ticket: the name of the key that sealed it."""
    text = subprocess.run(["openssl", "sess_id", "-in", str(ticket), "-text", "-noout"], capture_output=True,
                          text=True, check=True).stdout
    dump = text.split("TLS session ticket:", 1)[1]
    rows = re.findall(r"^\s*[0-9a-f]{4} - (.{47})", dump, re.M)
    return "".join(rows).replace(" ", "").replace("-", "")[:32]


def tickets_status(stack: Stack) -> dict:
    return stack.status()["session_tickets"]


def test_a_ticket_resumes_across_an_envoy_restart(tstack: Stack, tmp_path: Path) -> None:
    ticket = new_ticket(tstack.port, tmp_path / "ticket.pem")
    assert resumed(tstack.port, ticket)
    # Envoy's built-in ticket keys would die with it: ours come back over SDS.
    before = tstack.status()["envoy"]["pid"]
    killed = time.monotonic()
    os.kill(before, signal.SIGKILL)
    while time.monotonic() < killed + ROTATION_S:
        status = tstack.status()
        if status["ready"] and status["envoy"]["pid"] not in (None, before):
            break
        time.sleep(0.2)
    assert tstack.status()["envoy"]["pid"] != before, "Envoy did not come back within one rotation"
    assert resumed(tstack.port, ticket), "the restarted Envoy lost the ticket keys"


def test_rotation_keeps_the_previous_key_then_drops_it_before_the_ticket_expires(tstack: Stack,
                                                                                tmp_path: Path) -> None:
    # Line up with the rotation timer: take the ticket just before a rotation, so its key is
    # dropped one interval later, before the two intervals a ticket could otherwise last.
    start = tickets_status(tstack)["rotations"]
    while tickets_status(tstack)["rotations"] == start:
        time.sleep(0.1)
    rotated = time.monotonic()
    time.sleep(ROTATION_S - 2)
    ticket = new_ticket(tstack.port, tmp_path / "late.pem")
    issued = time.monotonic()
    time.sleep(max(0.0, rotated + ROTATION_S + 1.5 - time.monotonic()))
    assert tickets_status(tstack)["rotations"] == start + 2
    assert resumed(tstack.port, ticket), "the previous key must still open its tickets"
    fresh = new_ticket(tstack.port, tmp_path / "fresh.pem")
    assert ticket_key_name(fresh) != ticket_key_name(ticket), "new tickets must be sealed by the new key"
    time.sleep(max(0.0, rotated + 2 * ROTATION_S + 1.5 - time.monotonic()))
    assert time.monotonic() - issued < 2 * ROTATION_S - 3  # younger than any ticket's maximum age
    assert not resumed(tstack.port, ticket), "a key two rotations old must be gone"
    assert resumed(tstack.port, fresh)


def test_a_new_certificate_ends_every_session_of_the_old_one(tstack: Stack, tmp_path: Path) -> None:
    ticket = new_ticket(tstack.port, tmp_path / "old-cert.pem")
    assert resumed(tstack.port, ticket)
    before = tstack.status()["certificate"]["serial"]
    tstack.admin("/admin/rotate")
    deadline = time.monotonic() + 30
    while tstack.status()["certificate"]["serial"] == before and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # the SDS push reaches Envoy
    # a session verified against the old certificate (its evidence, models, config) never resumes
    assert not resumed(tstack.port, ticket)
    assert tickets_status(tstack)["replaced_for_new_certificates"] >= 1
    assert resumed(tstack.port, new_ticket(tstack.port, tmp_path / "new-cert.pem"))


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
