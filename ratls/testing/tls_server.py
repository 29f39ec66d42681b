"""A loopback TLS server that presents a given certificate and key and then waits for one
byte: enough for a client to fetch and judge the certificate (tests, attack simulations).
With ``then``, it presents another certificate from the second connection on: a rotation, or
an interceptor swapping certificates between a client's verification and its use."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


@contextmanager
def serve_certificate(cert: Path, key: Path, *, then: tuple[Path, Path] | None = None) -> Iterator[int]:
    contexts = [_context(cert, key)] + ([_context(*then)] if then else [])

    def handle(conn: socket.socket, served: int) -> None:
        try:
            with contexts[min(served, len(contexts) - 1)].wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass  # clients that judge and hang up are the point of this server

    with serving(handle) as port:
        yield port


@contextmanager
def serving(handle: Callable[[socket.socket, int], None]) -> Iterator[int]:
    """A loopback listener on a free port, each connection handed to *handle* with its number
    (0, 1, ...) on one thread, until the block ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        served = 0
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            handle(conn, served)
            served += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()
