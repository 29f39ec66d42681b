"""Managed mode: the gateway starts Triton itself on a measured snapshot of the model
repository, restarts it when it dies, and knows at every start what it serves."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ratls.errors import ConfigError, RatlsError, UpstreamUnavailable
from triton_backend.demo import demo_repository
from triton_backend.launch import TritonConfig, TritonProcess
from triton_backend.manifest import Manifest, ManifestError, RepositoryWatch, build_manifest

from .attested_repository import AttestedRepository
from .config import TritonSection
from .supervisor import Backoff
from .triton_upstream import Publish, TritonEndpoint, TritonUpstream

log = logging.getLogger("ratls.gateway")


def served_digest(served: Path | None, expected: RepositoryWatch | None) -> str | None:
    """The manifest digest of the snapshot Triton serves (*expected*'s when it holds the very files)."""
    if served is None:
        return None
    if expected is not None and expected.describes(served):
        return expected.manifest.digest
    try:
        return build_manifest(served).digest
    except ManifestError as exc:
        return f"unmeasurable: {exc}"


class ManagedTriton(TritonUpstream):
    def __init__(self, section: TritonSection, repository: AttestedRepository, publish: Publish) -> None:
        super().__init__(section, repository, publish)
        self.process: TritonProcess | None = None
        self.reloading = False  # Triton is being restarted on purpose: not a crash to recover from
        self._lock = asyncio.Lock()  # one (re)start at a time: crash recovery or a reload

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self, run_dir: Path, deny_apis: tuple[str, ...], ready_timeout_s: float) -> None:
        t = self.section
        repo = Path(t.model_repository) if t.model_repository else demo_repository()
        await self.repository.measure(repo)
        self.process = TritonProcess(TritonConfig(
            repo, http_port=t.http_port, grpc_port=t.grpc_port, metrics_port=t.metrics_port, binary=t.binary,
            ready_timeout=ready_timeout_s, work_dir=run_dir / "triton", deny_apis=deny_apis))
        try:
            await self._start_process()
            await asyncio.to_thread(self.process.wait_ready)
        except RatlsError as exc:  # TritonError, TritonNotFound: the step that failed, with its hint
            raise ConfigError(f"Triton did not start: {exc.message}", hint=exc.hint) from exc
        except OSError as exc:
            raise ConfigError(f"Triton did not start: {exc}") from exc
        self.endpoint = TritonEndpoint("127.0.0.1", self.process.config.http_port, self.process.config.grpc_port)
        self.ready = True

    async def _start_process(self, expected: RepositoryWatch | None = None) -> None:
        """(Re)start Triton on a fresh snapshot of the repository, and measure that snapshot:
        what Triton serves is then known, whatever happened to the source meanwhile. A
        snapshot of hard links to exactly the files *expected* measured is not hashed again."""
        assert self.process is not None
        expected = expected or self.repository.watch
        async with self._lock:
            await asyncio.to_thread(self.process.stop)
            self.process.start()  # on the loop thread: see TritonProcess.start (PDEATHSIG)
            self.served_digest = await asyncio.to_thread(served_digest, self.process.served_repository, expected)

    async def _recovered(self, backoff: Backoff) -> bool:
        process = self.process
        assert process is not None
        if process.running or self.reloading:
            # regions the backend adds later (larger tensors) are made private within a second
            await asyncio.to_thread(process.make_shm_private)
            return False
        self.ready = False
        delay = backoff.next()
        log.error("Triton exited (code %s); restarting in %.1fs. Log tail:\n%s",
                  process.proc.returncode if process.proc else None, delay, process.log_tail(10))
        await asyncio.sleep(delay)
        if self.reloading or process.running:
            return True  # a reload took over the restart while this one waited
        refused = self.repository.refusal(self.served_digest)
        try:
            await self._start_process()
            self.restarts += 1
        except Exception as exc:  # noqa: BLE001 - keep supervising whatever failed
            log.error("Triton restart failed: %s", exc)
        if self.repository.refusal(self.served_digest) != refused:
            log.error("Triton restarted on a repository that is not the attested one: refusing")
            await self.publish()
        return True

    async def serve(self, watch: RepositoryWatch) -> None:
        manifest = watch.manifest
        if self.served_digest == manifest.digest:
            return  # already serving exactly this: no restart needed
        assert self.process is not None
        self.reloading = True
        self.ready = False
        try:
            await self._start_process(watch)
            await asyncio.to_thread(self.process.wait_ready)
        except (RatlsError, OSError) as exc:  # reported; the old claims stay
            reason = exc.message if isinstance(exc, RatlsError) else str(exc)
            raise UpstreamUnavailable(f"Triton did not start on the updated repository: {reason}",
                                      hint="fix the model (Triton's log says why) and reload again") from exc
        finally:
            self.reloading = False
        if self.served_digest != manifest.digest:
            raise ConfigError("the model repository changed again while it was re-attested",
                              hint="wait until the update is complete, then reload again")
        self.ready = True

    def serves(self, manifest: Manifest | None) -> bool:
        return manifest is not None and self.served_digest == manifest.digest

    def metrics_url(self) -> str | None:
        return f"http://127.0.0.1:{self.process.config.metrics_port}/metrics" if self.process else None

    async def close(self) -> None:
        if self.process is not None:
            await asyncio.to_thread(self.process.close)
