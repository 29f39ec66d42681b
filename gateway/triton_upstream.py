"""Triton behind the gateway, as Envoy's upstream: where it listens, whether it is ready, and
why it may not be used. ``ManagedTriton`` (triton_managed.py) starts and restarts its own
process; ``ExternalTriton`` (triton_external.py) checks one started by someone else."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from triton_backend.manifest import Manifest, RepositoryWatch

from .attested_repository import AttestedRepository
from .config import TritonSection
from .facts import Facts
from .metrics import MetricFamily
from .supervisor import Backoff

log = logging.getLogger("ratls.gateway")

Publish = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class TritonEndpoint:
    host: str
    http_port: int
    grpc_port: int

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"


class TritonUpstream(Facts):
    def __init__(self, section: TritonSection, repository: AttestedRepository, publish: Publish) -> None:
        self.section = section
        self.repository = repository  # the models the certificate names
        self.publish = publish  # a new snapshot, when what may reach Triton changed
        self.endpoint: TritonEndpoint | None = None
        self.ready = False
        self.problem: str | None = None  # why a Triton that answers is not used
        self.restarts = 0
        self.served_digest: str | None = None  # the manifest Triton is known to serve, when it is measured

    # ---- what a mode does ----
    async def start(self, run_dir: Path, deny_apis: tuple[str, ...], ready_timeout_s: float) -> None:
        raise NotImplementedError

    async def serve(self, watch: RepositoryWatch) -> None:
        """Make Triton serve the repository *watch* measured (model control is off: a restart)."""
        raise NotImplementedError

    def serves(self, manifest: Manifest | None) -> bool:
        """Whether Triton is known to serve *manifest*."""
        raise NotImplementedError

    def note_repository_change(self) -> None:
        """The repository just stopped matching the attested manifest."""

    def restarted_since_change(self) -> bool:
        """Whether Triton restarted (so loaded the changed files) since the repository changed."""
        return False

    async def _recovered(self, backoff: Backoff) -> bool:
        """Handle the process having died; True when this round of supervision is over."""
        return False

    async def _confirmed(self, answering: bool) -> bool:
        """Whether a Triton that answers (or not) may be used."""
        return answering

    def metrics_url(self) -> str | None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return None

    async def close(self) -> None:
        """Stop what this gateway started."""

    # ---- common to both modes ----
    def refusal(self) -> str | None:
        """Why nothing may reach Triton now, or None."""
        refused = self.repository.refusal(self.served_digest)
        if refused is None and self.problem and self.section.on_exposed == "refuse":
            refused = "Triton failed the hardening check"  # what answers on its port is not what was checked
        return refused

    async def supervise(self, restart_backoff_max_s: float) -> None:
        """Follow Triton's readiness every second (and, managed, restart it when it dies)."""
        backoff = Backoff(maximum=restart_backoff_max_s)
        assert self.endpoint is not None
        url = f"{self.endpoint.http_url}/v2/health/ready"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                if await self._recovered(backoff):
                    continue
                try:
                    async with session.get(url) as resp:
                        answering = resp.status == 200
                except (aiohttp.ClientError, OSError, TimeoutError):
                    answering = False
                ready = await self._confirmed(answering)
                if ready and not self.ready:
                    log.info("Triton is ready")
                    backoff.reset()
                elif not ready and self.ready:
                    log.error("Triton is not ready")
                self.ready = ready
                await asyncio.sleep(1.0)

    async def server_metadata(self) -> dict[str, Any] | None:
        """Triton's ``GET /v2`` answer, which Envoy then serves filtered by the policy."""
        assert self.endpoint is not None
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                async with session.get(f"{self.endpoint.http_url}/v2") as resp:
                    if resp.status == 200:
                        doc = await resp.json(content_type=None)
                        return doc if isinstance(doc, dict) else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            log.warning("Triton's server metadata unavailable (%s): GET /v2 is forwarded to Triton, "
                        "extensions unfiltered", type(exc).__name__)
        return None

    async def metrics_text(self) -> str:
        """Triton's own metrics (nv_inference_*): its port is private to the VM, yet dashboards
        built on them must keep working behind the gateway."""
        url = self.metrics_url()
        if url is None:
            return ""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return await resp.text()
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        return "# triton metrics unavailable\n"

    def readiness_reasons(self) -> list[str]:
        reasons = []
        if not self.ready:
            reasons.append(f"upstream unavailable: {self.problem}" if self.problem else "upstream unavailable")
        refused = self.repository.refusal(self.served_digest)
        return reasons + ([refused] if refused is not None else [])

    def metric_families(self) -> list[MetricFamily]:
        return [MetricFamily("ratls_upstream_ready", "gauge", "Triton readiness").add(1 if self.ready else 0),
                MetricFamily("ratls_triton_restarts_total", "counter", "managed Triton restarts").add(self.restarts)]

    def status(self) -> dict[str, Any]:
        end = self.endpoint
        return {"triton": {"pid": self.pid, "ready": self.ready, "http_port": end.http_port if end else None,
                           "grpc_port": end.grpc_port if end else None}}
