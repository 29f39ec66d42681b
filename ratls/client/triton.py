"""tritonclient, verified: ordinary ``tritonclient`` clients whose TLS trusts only the RA-TLS
certificate that passed the policy. When the server rotates its certificate, the next new
connection fails TLS verification; the wrapper then verifies the new certificate against the
same policy, trusts it, and retries the call once - the caller sees no error unless the new
certificate fails the policy (PolicyViolation).

    from ratls.client.triton import http_client, grpc_client
    client = http_client("https://gw.example:8443", policy="policy.yaml")
    client.infer("add_sub", inputs)          # a tritonclient.http.InferenceServerClient call
"""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import EvidenceError
from ..policy import Policy
from ..trust import Trust
from .pinning import Pin, pinned_context
from .verify import VerifiedServer, as_policy, verify_server

TLS_FAILURE_MARKERS = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "handshake", "SSL", "ssl")


def verified_ssl_context(url: str, policy: Policy | str | Path, *, trust: Trust | None = None) -> ssl.SSLContext:
    """An SSLContext trusting exactly the verified certificate (for httpx, aiohttp...)."""
    return pinned_context(verify_server(url, as_policy(policy), trust=trust))


def _looks_like_tls_failure(exc: BaseException) -> bool:
    # gRPC reports a refused handshake as UNAVAILABLE, like an outage; _refresh tells them apart
    # by the certificate presented, so an outage costs one handshake per failed call, no verification.
    if isinstance(exc, ssl.SSLError):
        return True
    text = f"{type(exc).__name__}: {exc}"
    return any(marker in text for marker in TLS_FAILURE_MARKERS) or "UNAVAILABLE" in text


def grpc_channel_args(server: VerifiedServer, channel_args: list[tuple[str, Any]] | None,
                      keepalive_options: Any = None) -> list[tuple[str, Any]]:
    """tritonclient's own channel options (2 GiB messages, its keepalive) unless the caller gave
    theirs, plus the TLS name of the verified certificate: tritonclient drops all its defaults as
    soon as ``channel_args`` is passed, and the name override has to be passed that way."""
    if channel_args is None:
        from tritonclient.grpc import KeepAliveOptions
        from tritonclient.grpc._client import MAX_GRPC_MESSAGE_SIZE

        k = keepalive_options or KeepAliveOptions()
        channel_args = [
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", k.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", k.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", k.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", k.http2_max_pings_without_data),
        ]
    if any(name == "grpc.ssl_target_name_override" for name, _ in channel_args):
        return list(channel_args)
    return [("grpc.ssl_target_name_override", (server.names or ["localhost"])[0]), *channel_args]


class _Reverifying:
    """Delegates to a tritonclient client; on a TLS failure re-verifies and retries once."""

    def __init__(self, url: str, policy: Policy, trust: Trust | None, build: Callable[[VerifiedServer], Any]) -> None:
        self._pin = Pin(url, policy, trust=trust)  # raises PolicyViolation
        self._build = build
        self._lock = threading.Lock()
        self._built_for = self._pin.server
        self.client = build(self._built_for)

    @property
    def server(self) -> VerifiedServer:
        return self._pin.server

    @property
    def reverifications(self) -> int:
        return self._pin.reverifications

    def _refresh(self) -> bool:
        """True when the pin moved to a new, acceptable certificate (the client is rebuilt for it)."""
        try:
            if not self._pin.refresh(self._built_for):  # raises PolicyViolation
                return False
        except EvidenceError:
            return False  # nothing answers: an outage, not a rotation; the caller sees its own error
        with self._lock:
            if self._built_for is not self._pin.server:
                old, self._built_for = self.client, self._pin.server
                self.client = self._build(self._built_for)
                close = getattr(old, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception:  # noqa: BLE001, S110 - the old client is being discarded
                        pass
        return True

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return getattr(self.client, name)(*args, **kwargs)
            except Exception as exc:
                if not _looks_like_tls_failure(exc) or not self._refresh():
                    raise
                return getattr(self.client, name)(*args, **kwargs)

        return call


class VerifiedHttpClient(_Reverifying):
    def __init__(self, url: str, policy: Policy, trust: Trust | None, **kwargs: Any) -> None:
        import tritonclient.http as thttp

        def build(server: VerifiedServer) -> Any:
            # A new context (and client) per verified certificate: adding the new certificate to
            # an existing trust store would not work, since OpenSSL picks the issuer by subject
            # name and every rotated certificate has the same subject as the previous one.
            ctx = pinned_context(server)
            return thttp.InferenceServerClient(f"{server.target.host}:{server.target.port}", ssl=True,
                                               ssl_context_factory=lambda: ctx, **kwargs)

        super().__init__(url, policy, trust, build)


class VerifiedGrpcClient(_Reverifying):
    def __init__(self, url: str, policy: Policy, trust: Trust | None, **kwargs: Any) -> None:
        import tritonclient.grpc as tgrpc

        self._dir = tempfile.TemporaryDirectory(prefix="ratls-grpc-")
        # Read once here, not inside build(): every rebuilt client (after a rotation) gets them too.
        caller_args = kwargs.pop("channel_args", None)
        keepalive = kwargs.get("keepalive_options")

        def build(server: VerifiedServer) -> Any:
            # tritonclient reads root_certificates from a path: a private file per certificate.
            pem = Path(self._dir.name) / f"{server.cert_sha256}.pem"
            fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(server.cert_pem)
            return tgrpc.InferenceServerClient(f"{server.target.host}:{server.target.port}", ssl=True,
                                               root_certificates=str(pem),
                                               channel_args=grpc_channel_args(server, caller_args, keepalive),
                                               **kwargs)

        super().__init__(url, policy, trust, build)


def http_client(url: str, policy: Policy | str | Path, *, trust: Trust | None = None,
                **kwargs: Any) -> VerifiedHttpClient:
    """A tritonclient.http client (all its methods) that trusts only the verified certificate."""
    return VerifiedHttpClient(url, as_policy(policy), trust, **kwargs)


def grpc_client(url: str, policy: Policy | str | Path, *, trust: Trust | None = None,
                **kwargs: Any) -> VerifiedGrpcClient:
    """A tritonclient.grpc client (keeping tritonclient's message-size defaults) pinned likewise."""
    return VerifiedGrpcClient(url, as_policy(policy), trust, **kwargs)


def aio_http_client(url: str, policy: Policy | str | Path, *, trust: Trust | None = None, **kwargs: Any) -> Any:
    """tritonclient.http.aio client with an SSL context trusting only the verified certificate.
    (Verification happens now; re-verification on rotation is the sync wrapper's job.)"""
    import tritonclient.http.aio as thttp_aio

    server = verify_server(url, as_policy(policy), trust=trust)
    return thttp_aio.InferenceServerClient(f"{server.target.host}:{server.target.port}", ssl=True,
                                           ssl_context=pinned_context(server), **kwargs)


def aio_grpc_client(url: str, policy: Policy | str | Path, *, trust: Trust | None = None, **kwargs: Any) -> Any:
    import grpc
    import tritonclient.grpc.aio as tgrpc_aio

    server = verify_server(url, as_policy(policy), trust=trust)
    creds = grpc.ssl_channel_credentials(root_certificates=server.cert_pem.encode())
    channel_args = grpc_channel_args(server, kwargs.pop("channel_args", None), kwargs.get("keepalive_options"))
    return tgrpc_aio.InferenceServerClient(f"{server.target.host}:{server.target.port}", ssl=True, creds=creds,
                                           channel_args=channel_args, **kwargs)
