"""Trusting exactly one verified certificate, and moving that trust after a rotation only to a
certificate that passed the same policy. Shared by the HTTP clients (``requests`` adapter,
fresh-evidence fetch); nothing here trusts a CA."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

from ..policy import Policy
from ..trust import Trust
from .fetch import Target, fetch_certificate
from .verify import VerifiedServer, as_policy, verify_presented, verify_server


def origin(target: Target) -> str:
    """``https://HOST:PORT`` for *target*, an IPv6 literal in brackets."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"https://{host}:{target.port}"


def pinned_context(server: VerifiedServer) -> ssl.SSLContext:
    """An SSLContext whose only trust anchor is the verified certificate. A new context per
    certificate: OpenSSL looks issuers up by subject name, and a rotated certificate has the same
    subject as the one before, so both cannot live in one trust store."""
    return context_trusting(server.cert_der)


def context_trusting(cert_der: bytes) -> ssl.SSLContext:
    """An SSLContext whose only trust anchor is *cert_der*: another certificate on the connection
    (a rotation, an interceptor) fails the handshake instead of being believed."""
    ctx = ssl.create_default_context(cadata=ssl.DER_cert_to_PEM_cert(cert_der))
    ctx.check_hostname = False  # trust is the pinned certificate itself, not its names
    return ctx


class Pin:
    """The certificate a client currently trusts for one server (``server``), verified against
    ``policy`` before it was trusted. Thread-safe."""

    def __init__(self, url: str, policy: Policy | str | Path, *, trust: Trust | None = None) -> None:
        self.url, self.policy, self.trust = url, as_policy(policy), trust
        self._lock = threading.Lock()
        self.server = verify_server(url, self.policy, trust=trust)  # raises PolicyViolation
        self.reverifications = 0

    def refresh(self, seen: VerifiedServer) -> bool:
        """After a TLS failure while *seen* was pinned: verify what the server presents now.

        True if the pin has moved to another certificate that passed the policy (possibly moved
        by another thread meanwhile: many requests failing at once re-verify once); False if the
        server still presents *seen*, so the TLS failure was something else. Raises
        PolicyViolation if the new certificate fails the policy (the pin stays where it was), and
        EvidenceError if the server cannot be reached to look."""
        with self._lock:
            if self.server.cert_der != seen.cert_der:
                return True
            # Look before verifying: a server that is down or overloaded presents the same
            # certificate, and an outage must not cost a verification per failed request.
            presented = fetch_certificate(self.server.target)
            if presented == seen.cert_der:
                return False
            self.server = verify_presented(self.server.target, presented, self.policy, trust=self.trust)
            self.reverifications += 1
            return True
