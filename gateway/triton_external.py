"""External mode: Triton is started by someone else (compose, systemd). The gateway waits
for it, checks its hardening (loopback listeners, no model control) before serving through
it and again whenever it may have been replaced, and tells its restarts by its listening
sockets."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from ratls.errors import ConfigError, UpstreamUnavailable
from triton_backend import hardening
from triton_backend.manifest import Manifest, RepositoryWatch

from .attested_repository import AttestedRepository
from .config import OnMismatch, TritonSection
from .triton_upstream import Publish, TritonEndpoint, TritonUpstream

log = logging.getLogger("ratls.gateway")


class ExternalTriton(TritonUpstream):
    def __init__(self, section: TritonSection, repository: AttestedRepository, publish: Publish) -> None:
        super().__init__(section, repository, publish)
        self.checked_listeners: tuple[int, ...] = ()  # its listening sockets when it last passed the check
        # its listeners when the repository last changed state (to tell whether Triton was
        # restarted - reloaded its models - since)
        self.listeners_at_transition: Any = None

    def current_listeners(self) -> Any:
        return hardening.listener_inodes([self.section.http_port, self.section.grpc_port])

    async def start(self, run_dir: Path, deny_apis: tuple[str, ...], ready_timeout_s: float) -> None:
        t = self.section
        if t.model_repository:
            await self.repository.measure(Path(t.model_repository))
        endpoint = TritonEndpoint(t.host, t.http_port, t.grpc_port)
        report = await self._answering(endpoint, ready_timeout_s)
        if not report.ok:
            message = "; ".join(report.problems)
            if t.on_exposed is OnMismatch.REFUSE:
                raise ConfigError(f"external Triton failed the hardening check: {message}",
                                  hint="start Triton with the flags README lists (loopback addresses, "
                                       "--model-control-mode=none)")
            log.warning("external Triton failed the hardening check (continuing, on_exposed=warn): %s", message)
        self.checked_listeners = self.listeners_at_transition = report.listeners
        self.ready = True
        self.endpoint = endpoint

    async def _answering(self, endpoint: TritonEndpoint, timeout: float) -> hardening.HardeningReport:
        """An external Triton is often started after the gateway (compose, systemd) and takes a
        while to load its models: wait for it to answer, up to triton.ready_timeout."""
        url, ports = endpoint.http_url, [endpoint.http_port, endpoint.grpc_port]
        deadline = time.monotonic() + timeout
        waiting_logged = False
        while True:
            report = await asyncio.to_thread(hardening.check, url, ports)
            if report.answered:
                return report
            if time.monotonic() >= deadline:
                raise UpstreamUnavailable(
                    f"Triton did not answer at {url} within triton.ready_timeout ({timeout:g}s): "
                    f"{'; '.join(report.problems)}",
                    hint="start Triton (listening on loopback), check triton.host/http_port, "
                         "or raise triton.ready_timeout if its models take longer to load")
            if not waiting_logged:
                log.info("waiting for Triton at %s (up to %gs)", url, timeout)
                waiting_logged = True
            await asyncio.sleep(1.0)

    async def still_hardened(self) -> bool:
        t = self.section
        report = await asyncio.to_thread(hardening.check, f"http://{t.host}:{t.http_port}", [t.http_port, t.grpc_port])
        problem = "; ".join(report.problems) if not report.ok else None
        acceptable = report.ok or (report.answered and t.on_exposed is OnMismatch.WARN)
        if acceptable:
            self.checked_listeners = report.listeners
        if problem != self.problem:
            if problem:
                log.error("external Triton failed the hardening check after reconnecting (on_exposed=%s): %s",
                          t.on_exposed, problem)
            else:
                log.info("external Triton passed the hardening check again")
            self.problem = problem
            if t.on_exposed is OnMismatch.REFUSE:
                await self.publish()  # Envoy stops (or resumes) forwarding, not only /healthz
        return acceptable

    async def _confirmed(self, answering: bool) -> bool:
        refusing = self.problem is not None and self.section.on_exposed == "refuse"
        if answering and (not self.ready or refusing or self.current_listeners() != self.checked_listeners):
            # an external Triton that went away may come back as something else (another
            # process on the port, other flags): re-check before serving through it again
            return await self.still_hardened()
        return answering

    async def serve(self, watch: RepositoryWatch) -> None:
        attested = self.repository.manifest
        changed = attested is None or watch.manifest.digest != attested.digest
        if changed and self.current_listeners() == self.listeners_at_transition:
            raise ConfigError("the external Triton was not restarted since the repository changed, so it "
                              "still serves the models it loaded before",
                              hint="restart Triton on the updated repository, then reload again")
        if not await self.still_hardened() and self.section.on_exposed == "refuse":
            raise UpstreamUnavailable("the external Triton failed the hardening check; nothing was re-attested",
                                      hint="restart Triton on the updated repository with README's flags, "
                                           "then reload again")
        self.listeners_at_transition = self.current_listeners()

    def serves(self, manifest: Manifest | None) -> bool:
        return manifest is not None

    def note_repository_change(self) -> None:
        self.listeners_at_transition = self.current_listeners()

    def restarted_since_change(self) -> bool:
        return self.current_listeners() != self.listeners_at_transition

    def metrics_url(self) -> str | None:
        t = self.section
        return f"http://{t.host}:{t.metrics_port}/metrics" if t.metrics_port else None
