"""``requests``, verified: a Session whose connections to one RA-TLS server trust exactly the
certificate that passed the policy (``pip install 'ratls-gateway[requests]'``).

    from ratls.client.requests_adapter import verified_session
    session = verified_session("https://gw.example:8443", policy="policy.yaml")
    session.get("https://gw.example:8443/v2/health/ready")

How the pin is enforced: urllib3 gets an SSLContext whose only trust anchor is the verified
certificate (OpenSSL then checks its signature and validity in the handshake) and, as a second,
independent check, ``assert_fingerprint`` = SHA-256 of that exact certificate, compared before
any request byte is sent. The fingerprint alone would need verification switched off in the
handshake; the context alone would not notice extra CAs loaded into it - and requests does load
its CA bundle into a given context when ``verify=True``, which is why ``cert_verify`` is
overridden: here ``verify=`` never widens or disables trust. Hostname checking is off: the trust
is the pinned certificate, not a name in it.

When the server rotates its certificate, the next connection fails TLS; the adapter then
verifies the new certificate against the same policy and retries the request once (the failed
attempt sent nothing: TLS failed first). A new certificate that fails the policy raises
``PolicyViolation`` and nothing is sent to it. Requests to other origins use the Session's
ordinary adapters.
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path
from typing import Any

try:
    import requests
    from requests.adapters import HTTPAdapter
except ImportError as exc:  # the optional extra
    raise ImportError("ratls.client.requests_adapter needs requests: pip install 'ratls-gateway[requests]'") from exc

from ..errors import EvidenceError
from ..policy import Policy
from ..trust import Trust
from .pinning import Pin, origin, pinned_context
from .verify import VerifiedServer


class VerifiedAdapter(HTTPAdapter):
    """An HTTPAdapter whose TLS trusts only ``pin.server``'s certificate, following a rotation
    only to a certificate that passed the same policy."""

    def __init__(self, pin: Pin, **kwargs: Any) -> None:
        self.pin = pin
        self._lock = threading.Lock()
        self._pinned: VerifiedServer = pin.server
        self._tls = self._tls_kwargs(pin.server)
        super().__init__(**kwargs)  # builds the pool manager, so the pin must be set first

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The context connections use now: its one trust anchor is the pinned certificate."""
        return self._tls["ssl_context"]

    @staticmethod
    def _tls_kwargs(server: VerifiedServer) -> dict[str, Any]:
        return {"ssl_context": pinned_context(server), "assert_hostname": False,
                "assert_fingerprint": server.cert_sha256}

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **{**pool_kwargs, **self._tls})

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        # Through an HTTPS proxy (CONNECT) the TLS to the server is still pinned.
        return super().proxy_manager_for(proxy, **{**proxy_kwargs, **self._tls})

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # requests would point verify=True at its CA bundle (loaded into our context) and
        # verify=False would switch checking off: the pin is the trust, whatever verify= says.
        super().cert_verify(conn, url, False, cert)  # keeps the client-certificate handling
        conn.cert_reqs, conn.ca_certs, conn.ca_cert_dir = "CERT_REQUIRED", None, None

    def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None) -> Any:
        # requests >= 2.32 keys pools by verify= too; one pinned pool per origin, whatever it says.
        return super().build_connection_pool_key_attributes(request, True, cert)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        seen = self._pinned
        try:
            return super().send(request, **kwargs)
        except requests.exceptions.SSLError:
            if not self._follow_rotation(seen):
                raise
        return super().send(request, **kwargs)

    def _follow_rotation(self, seen: VerifiedServer) -> bool:
        """True if the pin moved to a new, verified certificate (retry); False to report the TLS
        error as it was. PolicyViolation from the new certificate propagates."""
        try:
            if not self.pin.refresh(seen):
                return False
        except EvidenceError:
            return False  # the server cannot be reached to look again: the TLS error says more
        self._repin(self.pin.server)
        return True

    def _repin(self, server: VerifiedServer) -> None:
        with self._lock:
            if self._pinned.cert_der == server.cert_der:
                return  # another thread got here first
            self._pinned, self._tls = server, self._tls_kwargs(server)
            # Pooled connections and cached proxy managers hold the old pin: start over.
            self.poolmanager.clear()
            for manager in self.proxy_manager.values():
                manager.clear()
            self.proxy_manager.clear()
            self.init_poolmanager(self._pool_connections, self._pool_maxsize, block=self._pool_block)


def origin_prefixes(server: VerifiedServer) -> list[str]:
    """The URL prefixes requests matches for the verified origin (the default port both ways)."""
    base = origin(server.target)
    prefixes = [base + "/"]
    if server.target.port == 443:
        prefixes.append(base.removesuffix(":443") + "/")
    return prefixes


def verified_session(url: str, policy: Policy | str | Path, *, trust: Trust | None = None) -> requests.Session:
    """Verify the server at *url* now (PolicyViolation if it fails: nothing is sent), and return a
    Session whose requests to that origin trust exactly the verified certificate."""
    adapter = VerifiedAdapter(Pin(url, policy, trust=trust))
    session = requests.Session()
    for prefix in origin_prefixes(adapter.pin.server):
        session.mount(prefix, adapter)
    return session
