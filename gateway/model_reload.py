"""Re-attesting the model repository after an update (SIGHUP, POST /admin/reload).

Nothing reaches Triton while this runs. The repository is measured; a managed Triton is
restarted on a snapshot that must measure the same (an external one must have been
restarted since the repository last changed); a new certificate names the new models and
config; then traffic flows again. A repository that cannot be measured changes nothing
(409). A failure after that keeps the old claims and keeps refusing until a reload succeeds
(what Triton now serves is not what the old certificate names)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from triton_backend.manifest import Manifest, RepositoryWatch

from .attested_config import AttestedConfig
from .attested_repository import AttestedRepository, measured
from .identity import IdentityManager
from .triton_upstream import Publish, TritonUpstream

log = logging.getLogger("ratls.gateway")


class ModelReload:
    def __init__(self, repository: AttestedRepository, upstream: TritonUpstream, identity: IdentityManager,
                 attested: AttestedConfig, publish: Publish) -> None:
        self.repository, self.upstream, self.identity = repository, upstream, identity
        self.attested, self.publish = attested, publish
        self._lock = asyncio.Lock()

    async def reload(self) -> dict[str, Any]:
        repo = self.repository
        assert repo.watch is not None
        async with self._lock:
            watch = await measured(repo.watch.repository)
            old_watch, old = repo.watch, repo.manifest
            repo.reload_refusal = "the model repository is being re-attested"
            await self.publish()
            try:
                await self.upstream.serve(watch)
                self._adopt(watch)
                await self.identity.issue_async()
            except Exception:
                if repo.manifest is not old:
                    self._adopt(old_watch)
                repo.reload_refusal = None if self.upstream.serves(old) else "re-attestation failed; reload again"
                await self.publish()
                raise
            repo.reload_refusal = None
            repo.changes = []
            await self.publish()
            return self._reloaded(old, watch.manifest)

    def _adopt(self, watch: RepositoryWatch) -> None:
        """The attested state follows *watch*'s manifest: filters (its models), config digest, claims."""
        self.repository.watch = watch
        self.attested.recompile(watch.manifest)
        self.identity.models = watch.manifest.claims()
        self.identity.config_digest = self.attested.digest

    def _reloaded(self, old: Manifest | None, manifest: Manifest) -> dict[str, Any]:
        changed = old is None or manifest.digest != old.digest
        assert self.identity.current is not None
        serial = self.identity.current.serial
        log.info("model repository re-attested (changed: %s): manifest %s, config %s, certificate %d",
                 changed, manifest.digest, self.attested.digest, serial)
        return {"serial": serial, "manifest": manifest.digest, "changed": changed,
                "models": manifest.model_digests(), "config_digest": self.attested.digest}
