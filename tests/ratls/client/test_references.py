"""Fetching the reference documents (RIMs) a certificate's GPUs name from the server under
verification: only over a connection pinned to that certificate, never following a redirect,
bounded in size and time, never for documents the verifier holds itself."""

from __future__ import annotations

import datetime as dt
import http.server
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from ratls.cert import generate_key
from ratls.client.fetch import Target
from ratls.client.references import REFERENCES_PATH, wanted, with_references
from ratls.issue import issue_certificate
from ratls.platforms.nvidia.collector import SimGpuCollector
from ratls.platforms.nvidia.sim import load_or_create, sim_gpu_dir
from ratls.platforms.sim.chain import SimChain
from ratls.platforms.sim.platform import SimPlatform
from ratls.trust import Trust


@contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler], tls: tuple[Path, Path] | None) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*tls)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def gpu_certificate(tmp_path: Path, sim_chain: SimChain) -> tuple[bytes, tuple[Path, Path], dict[str, bytes]]:
    key = generate_key()
    gpu_dir = sim_gpu_dir(tmp_path)
    issued = issue_certificate(SimPlatform(chain=sim_chain), key, now=dt.datetime.now(dt.UTC),
                               devices=SimGpuCollector(gpu_dir, 1))
    cert, key_file = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return issued.cert.public_bytes(serialization.Encoding.DER), (cert, key_file), load_or_create(gpu_dir).rims_by_id()


def test_rims_are_fetched_by_id_from_the_pinned_server(tmp_path: Path, sim_chain: SimChain) -> None:
    der, tls, rims = gpu_certificate(tmp_path, sim_chain)
    asked: list[str] = []

    class Rims(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            ref = self.path.removeprefix(REFERENCES_PATH)
            asked.append(ref)
            body = rims.get(ref)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    with serving(Rims, tls) as port:
        trust = with_references(Target("127.0.0.1", port), der, Trust())
    assert set(trust.device_references) == set(rims) and sorted(asked) == sorted(rims)
    # already held: nothing is asked again, and a verifier's own RIM directory is never asked for
    assert wanted(der, trust) == []
    own = tmp_path / "own"
    own.mkdir()
    for ref_id, xml in rims.items():
        (own / f"{ref_id}.xml").write_bytes(xml)
    assert wanted(der, Trust(nvidia_rim_dir=own)) == []


def test_a_redirect_is_not_followed(tmp_path: Path, sim_chain: SimChain) -> None:
    der, tls, _ = gpu_certificate(tmp_path, sim_chain)
    internal: list[str] = []

    class Internal(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            internal.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"secret")

        def log_message(self, *args: object) -> None:
            pass

    with serving(Internal, None) as internal_port:
        class Redirecting(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{internal_port}/latest/meta-data/")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        with serving(Redirecting, tls) as port:
            trust = with_references(Target("127.0.0.1", port), der, Trust())
    assert trust.device_references == {} and internal == []


def test_another_certificate_on_the_connection_gets_nothing(tmp_path: Path, sim_chain: SimChain) -> None:
    der, _, rims = gpu_certificate(tmp_path / "a", sim_chain)
    _, other_tls, _ = gpu_certificate(tmp_path / "b", sim_chain)

    class Rims(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(next(iter(rims.values())))

        def log_message(self, *args: object) -> None:
            pass

    with serving(Rims, other_tls) as port:  # the server presents another certificate than the one verified
        assert with_references(Target("127.0.0.1", port), der, Trust()).device_references == {}
