"""A loopback PCCS (Intel Provisioning Certificate Caching Service, API v4) that serves one
collateral set, so the gateway's online collateral path runs against a real HTTP server."""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _signed_body(key: str, document_json: str, signature_hex: str) -> bytes:
    """A PCS answer: the signed document (as the collateral holds it, compact JSON) under *key*,
    beside its signature, encoded by json.dumps (never pasted into a JSON text)."""
    return json.dumps({key: json.loads(document_json), "signature": signature_hex}, separators=(",", ":")).encode()


class LoopbackPccs:
    def __init__(self, collateral_json: bytes) -> None:
        self.collateral = json.loads(collateral_json)
        self.requests: list[str] = []
        self.fail = False
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> LoopbackPccs:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _routes(self) -> dict[str, tuple[bytes, dict[str, str]]]:
        c = self.collateral
        quote = urllib.parse.quote
        return {
            "/sgx/certification/v4/pckcrl": (bytes.fromhex(c["pck_crl"]),
                                             {"SGX-PCK-CRL-Issuer-Chain": quote(c["pck_crl_issuer_chain"])}),
            "/tdx/certification/v4/tcb": (
                _signed_body("tcbInfo", c["tcb_info"], c["tcb_info_signature"]),
                {"TCB-Info-Issuer-Chain": quote(c["tcb_info_issuer_chain"])}),
            "/tdx/certification/v4/qe/identity": (
                _signed_body("enclaveIdentity", c["qe_identity"], c["qe_identity_signature"]),
                {"SGX-Enclave-Identity-Issuer-Chain": quote(c["qe_identity_issuer_chain"])}),
            "/sgx/certification/v4/rootcacrl": (c["root_ca_crl"].encode(), {}),
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        pccs = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = urllib.parse.urlsplit(self.path).path
                pccs.requests.append(self.path)
                route = pccs._routes().get(path)
                if route is None or pccs.fail:
                    self.send_response(503 if pccs.fail else 404)
                    self.end_headers()
                    return
                body, headers = route
                self.send_response(200)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler
