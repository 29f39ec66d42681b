"""Fetch the certificate a TLS server presents, without trusting it (verification is ours)."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import EvidenceError, UsageError


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    @property
    def server_name(self) -> str | None:
        # SNI must not be an IP literal.
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in self.host else socket.AF_INET, self.host)
            return None
        except OSError:
            return self.host


def parse_target(text: str) -> Target:
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme != "https":
        raise UsageError(f"'{text}': only https:// targets carry an RA-TLS certificate")
    if not parts.hostname:
        raise UsageError(f"'{text}': no host name", hint="use https://HOST:PORT")
    try:
        port = parts.port or 443
    except ValueError:
        raise UsageError(f"'{text}': the port is not a number") from None
    return Target(parts.hostname, port)


def unverified_context() -> ssl.SSLContext:
    # Verification happens on the RA-TLS evidence, not through a CA: the handshake here only
    # retrieves the certificate, and no application byte is sent on this connection.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


def fetch_certificate(target: Target, *, timeout: float = 10.0) -> bytes:
    """Return the DER certificate the server presents."""
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout) as sock:
            with unverified_context().wrap_socket(sock, server_hostname=target.server_name) as tls:
                der = tls.getpeercert(binary_form=True)
    except ConnectionRefusedError:
        raise EvidenceError(f"nothing is listening on {target.host}:{target.port}",
                            hint="is the gateway running, and is this its address and port?") from None
    except (OSError, ssl.SSLError) as exc:
        raise EvidenceError(f"cannot complete a TLS handshake with {target.host}:{target.port}: {exc}",
                            hint="check the address and that the gateway is running") from None
    if not der:
        raise EvidenceError(f"{target.host}:{target.port} presented no certificate")
    return der
