"""The model repository the certificate names: its measured manifest, the watch that tells
when its files change after attestation, and whether that must stop traffic."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratls.errors import ConfigError
from triton_backend.manifest import Manifest, ManifestError, RepositoryWatch

from .config import OnMismatch, TritonSection
from .facts import Facts
from .metrics import MetricFamily

if TYPE_CHECKING:
    from .triton_upstream import Publish, TritonUpstream

log = logging.getLogger("ratls.gateway")


async def measured(repo: Path) -> RepositoryWatch:
    """The repository measured, with a watch whose fingerprint was taken first: a change made
    while hashing is then seen as a change, never folded silently into the baseline."""
    try:
        watch = await asyncio.to_thread(RepositoryWatch, repo)
    except ManifestError as exc:
        raise ConfigError(f"cannot measure the model repository {repo}: {exc}") from None
    manifest = watch.manifest
    if not manifest.model_digests():
        # an empty (or mistyped, or not yet mounted) repository would be attested as "serves nothing"
        raise ConfigError(f"the model repository {repo} holds no models",
                          hint="point triton.model_repository at the directory Triton loads its models from")
    return watch


class AttestedRepository(Facts):
    def __init__(self, section: TritonSection) -> None:
        self.section = section
        self.watch: RepositoryWatch | None = None  # None: no repository path (external Triton)
        self.changes: list[str] = []  # how the files differ from the manifest now
        self.reload_refusal: str | None = None  # set while re-attesting, and when that failed midway

    @property
    def manifest(self) -> Manifest | None:
        """What the certificate names: the manifest the watch was measured with."""
        return self.watch.manifest if self.watch is not None else None

    async def measure(self, repo: Path) -> None:
        self.watch = await measured(repo)

    def refusal(self, served_digest: str | None) -> str | None:
        """Why nothing may reach Triton because of the model repository, or None. *served_digest*
        is the manifest of what Triton is known to serve (None: not measured)."""
        if self.reload_refusal is not None:
            return self.reload_refusal
        if self.section.on_repository_change is not OnMismatch.REFUSE or self.manifest is None:
            return None
        if served_digest is not None and served_digest != self.manifest.digest:
            return "Triton serves a model repository other than the attested one"
        if self.changes:
            return "model repository changed after attestation"
        return None

    async def follow(self, interval_s: float, upstream: TritonUpstream, publish: Publish) -> None:
        """Compare the files with the manifest every *interval_s*; a change refuses traffic (with
        on_repository_change: refuse) until the files are back or a reload attests them."""
        assert self.watch is not None
        while True:
            await asyncio.sleep(interval_s)
            watch = self.watch
            changes = await asyncio.to_thread(watch.changes)
            if watch is not self.watch:
                continue  # re-attested meanwhile: this answer is about the previous manifest
            if not changes and self.changes:
                if upstream.restarted_since_change():
                    # an external Triton restarted meanwhile loaded the changed repository
                    self.changes = ["Triton was restarted while the repository differed from the "
                                    "attested one; restart it again, then POST /admin/reload"]
                    continue
                self.changes = []
                log.info("model repository is back to its attested state")
                await publish()
            elif changes and changes != self.changes:
                if not self.changes:
                    upstream.note_repository_change()
                self.changes = changes
                log.error("model repository changed after attestation (%s): %s",
                          self.section.on_repository_change, "; ".join(changes[:10]))
                if self.section.on_repository_change is OnMismatch.REFUSE:
                    await publish()

    def metric_families(self) -> list[MetricFamily]:
        return [MetricFamily("ratls_model_repository_changed", "gauge",
                             "1 if the repository changed after attestation").add(1 if self.changes else 0)]

    def status(self) -> dict[str, Any]:
        return {"repository_changes": self.changes}
