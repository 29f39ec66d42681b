"""A loopback HTTPS server for client tests: presents an RA-TLS certificate (``present`` swaps
it, a rotation) and answers each GET with ``respond(path)``. ``served`` lists the paths it
answered, so a test can tell that a refused client sent nothing."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

Reply = tuple[int, dict[str, str], bytes]


def ok_text(path: str) -> Reply:
    return 200, {"Content-Type": "text/plain"}, f"ok {path}".encode()


class HttpsServer:
    def __init__(self, cert: Path, key: Path, respond: Callable[[str], Reply] = ok_text) -> None:
        self.respond = respond
        self.served: list[str] = []
        self._context = self._load(cert, key)
        self._httpd = self._build()
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @staticmethod
    def _load(cert: Path, key: Path) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        return ctx

    def present(self, cert: Path, key: Path) -> None:
        """Present another certificate from the next connection on."""
        self._context = self._load(cert, key)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _build(self) -> ThreadingHTTPServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                status, headers, body = outer.respond(self.path)
                outer.served.append(self.path)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, object]:
                sock, addr = super().get_request()
                # The handshake runs in the handler's thread, with the certificate current now.
                return outer._context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # clients that judge the certificate and hang up are the point

        return Server(("127.0.0.1", 0), Handler)

    def __enter__(self) -> HttpsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
