"""``ratls proxy``: a local forwarder so any client (unmodified tritonclient, ``grpcurl
-plaintext``, ``curl http://``) reaches an RA-TLS server only after its certificate passed
the policy. Each upstream TLS connection is verified before a single client byte is
forwarded; a passing verdict is cached by certificate fingerprint only as long as it holds
(the earliest of notAfter, the claims' exp and iat + the policy's claims.max_age), then the
upstream is verified again.
HTTP/1.1 and HTTP/2 (prior knowledge, as gRPC clients speak it) pass through untouched.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from ..appraisal import Appraisal
from ..pipeline import verdict_valid_until, verify_certificate
from ..policy import Policy
from ..timeutil import utcnow
from ..trust import Trust
from .fetch import Target

log = logging.getLogger("ratls.proxy")
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _upstream_context(alpn: str) -> ssl.SSLContext:
    # The CA system is not consulted: trust comes from the RA-TLS verdict on the exact certificate.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols([alpn])
    return ctx


@dataclass
class ProxyStats:
    connections: int = 0
    verified: int = 0
    cache_hits: int = 0
    refused: int = 0
    failures: list[str] = field(default_factory=list)


class VerdictCache:
    def __init__(self) -> None:
        self._ok: dict[str, datetime] = {}  # cert sha256 -> last instant the verdict holds

    def get(self, fingerprint: str, now: datetime) -> bool:
        until = self._ok.get(fingerprint)
        if until is None:
            return False
        if now > until:
            del self._ok[fingerprint]
            return False
        return True

    def put(self, fingerprint: str, until: datetime) -> None:
        self._ok[fingerprint] = until


class VerifyingProxy:
    def __init__(self, listen_host: str, listen_port: int, target: Target, policy: Policy, *,
                 trust: Trust | None = None, connect_timeout: float = 10.0,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.listen_host, self.listen_port = listen_host, listen_port
        self.target, self.policy, self.trust = target, policy, trust
        self.clock = clock  # every verdict and cache lookup reads the time here (tests inject it)
        self.connect_timeout = connect_timeout
        self.cache = VerdictCache()
        self.stats = ProxyStats()
        self.last_refusal: Appraisal | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.listen_port)
        sock = self._server.sockets[0]
        self.listen_port = sock.getsockname()[1]
        log.info("ratls proxy on %s:%d -> %s:%d", self.listen_host, self.listen_port, self.target.host,
                 self.target.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _verify(self, der: bytes) -> bool:
        fingerprint = hashlib.sha256(der).hexdigest()
        now = self.clock()
        if self.cache.get(fingerprint, now):
            self.stats.cache_hits += 1
            return True
        from .references import with_references
        trust = with_references(self.target, der, self.trust)
        appraisal, rc = verify_certificate(der, policy=self.policy, now=now, trust=trust)
        if appraisal.ok and rc is not None:
            until = verdict_valid_until(rc, self.policy)
            self.cache.put(fingerprint, until)
            self.stats.verified += 1
            log.info("verified upstream certificate %s (verdict cached until %s, then verified again)",
                     fingerprint[:16], until.isoformat())
            return True
        self.last_refusal = appraisal
        reasons = "; ".join(f"{c.name}: {c.detail}" for c in appraisal.failures)
        self.stats.failures.append(reasons)
        log.error("REFUSED upstream %s:%d certificate %s: %s", self.target.host, self.target.port, fingerprint[:16],
                  reasons)
        return False

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.stats.connections += 1
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            # Peek at the client's first bytes to pick the ALPN the upstream must speak.
            first = await asyncio.wait_for(client_reader.read(len(H2_PREFACE)), timeout=30)
            if not first:
                return
            alpn = "h2" if H2_PREFACE.startswith(first[: len(H2_PREFACE)]) and first.startswith(b"PRI") else "http/1.1"
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(self.target.host, self.target.port, ssl=_upstream_context(alpn),
                                        server_hostname=self.target.server_name or self.target.host),
                timeout=self.connect_timeout)
            ssl_object = upstream_writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
            if not der or not await asyncio.to_thread(self._verify, der):
                self.stats.refused += 1
                return  # nothing the client sent has been forwarded
            upstream_writer.write(first)
            await asyncio.gather(self._pipe(client_reader, upstream_writer),
                                 self._pipe(upstream_reader, client_writer))
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            log.error("upstream %s:%d unavailable: %s", self.target.host, self.target.port, exc)
        except asyncio.CancelledError:
            pass  # the proxy is stopping: close this connection quietly (no traceback per connection)
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    writer.close()
            if task is not None:
                self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                writer.write_eof() if writer.can_write_eof() else None
            except (OSError, RuntimeError):
                pass


async def serve(proxy: VerifyingProxy, stop: asyncio.Event) -> None:
    await proxy.start()
    try:
        await stop.wait()
    finally:
        await proxy.stop()
