"""The gateway control plane: one asyncio process that owns the key, the evidence, the
configuration and the processes (DESIGN.md §1). ``Gateway`` is the composition root: it
builds the components, starts them in order, wires what each needs from the others, and
stops them in reverse; every component does one job in its own module."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from ratls.errors import ConfigError
from ratls.registry import Platform
from ratls.timeutil import utcnow

from . import envoy_config as ec
from . import facts
from .access_log import AccessLogRotation
from .attested_config import AttestedConfig
from .attested_repository import AttestedRepository
from .background import BackgroundTasks
from .config import GatewayConfig, TritonMode
from .data_plane import DataPlane, raise_file_limit
from .evidence_api import EvidenceApi
from .evidence_limiter import FairEvidenceLimiter
from .gpu_attestation import GpuAttestation
from .identity import IdentityFacts, IdentityManager, rotate_certificate, rotate_when_due
from .local_servers import LocalServers
from .model_reload import ModelReload
from .operator_api import OperatorApi, reload_or_rotate
from .ports import ports_free
from .reflection import reflection_server
from .run_dir import RunDir
from .session_tickets import SessionTicketKeys
from .signals import run_until_stopped
from .snapshot_builder import SnapshotInputs, build_snapshot
from .supervisor import EnvoySupervisor
from .tee_platform import build_platform
from .triton_external import ExternalTriton
from .triton_managed import ManagedTriton
from .triton_upstream import TritonUpstream
from .xds.snapshot import Snapshot

log = logging.getLogger("ratls.gateway")


class Gateway:
    def __init__(self, config: GatewayConfig, *, platform: Platform | None = None,
                 attested: AttestedConfig | None = None) -> None:
        self.config, self._platform = config, platform
        self.run = RunDir(config.control.run_dir)
        self.attested = attested or AttestedConfig(config)  # filters, their Envoy form, the config digest
        self.repository = AttestedRepository(config.triton)  # the models the certificate names
        mode = ManagedTriton if config.triton.mode is TritonMode.MANAGED else ExternalTriton
        self.upstream: TritonUpstream = mode(config.triton, self.repository, self.publish)
        self.data_plane = DataPlane(config.envoy, config.listen)
        self.ads, self.listener_options = self.data_plane.ads, self.attested.listener_options
        self.access_log, self.servers, self.tasks = AccessLogRotation(), LocalServers(), BackgroundTasks()
        sim_dir = Path(config.identity.sim_state_dir) if config.identity.sim_state_dir else None
        self.gpus = GpuAttestation(config.gpus, sim_dir)  # GPU evidence beside the CPU's
        listen = config.listen
        self.tickets = SessionTicketKeys(listen.session_ticket_rotation) if listen.session_resumption else None
        self.identity: IdentityManager | None = None
        self.evidence_api: EvidenceApi | None = None
        self._reload: ModelReload | None = None
        self.started, self.stopped = asyncio.Event(), asyncio.Event()

    @property
    def platform(self) -> Platform:
        if self._platform is None:
            self._platform = build_platform(self.config.identity)
        return self._platform

    @property
    def envoy(self) -> EnvoySupervisor | None:
        return self.data_plane.envoy

    @property
    def _snapshot_version(self) -> str:
        return self.data_plane.snapshot_version

    def _denied_triton_groups(self) -> tuple[str, ...]:
        return self.attested.denied_triton_groups()

    # ---- start-up, in dependency order ----
    async def start(self) -> None:
        cfg = self.config
        run_dir = self.run.create()
        raise_file_limit(self.attested.configured_policy().limits)
        ports_free([("listen", cfg.listen.address, cfg.listen.port),
                    ("control.metrics", cfg.control.metrics_address, cfg.control.metrics_port)])
        platform = self.platform  # fail early (and loudly) when no TEE and not sim
        if platform.simulated:
            log.warning("identity platform is SIMULATED: certificates carry no hardware evidence")
        await asyncio.to_thread(self.gpus.attest_at_start, utcnow())  # before Triton may use them
        await self.upstream.start(run_dir, self.attested.denied_triton_groups(),
                                  cfg.triton.ready_timeout.total_seconds())
        self.attested.compile(self.repository.manifest, await self.upstream.server_metadata(), run_dir)
        manifest = self.repository.manifest
        self.identity = IdentityManager.configured(platform, cfg.identity, config_digest=self.attested.digest,
                                                   models=manifest.claims() if manifest else None,
                                                   devices=self.gpus.collector)
        await self.identity.issue_async()
        self._reload = ModelReload(self.repository, self.upstream, self.identity, self.attested, self.publish)
        await self._serve_control(run_dir)
        await self.data_plane.start(run_dir, self._snapshot, self.attested.overload_manager,
                                    drain_time_s=cfg.envoy.drain_time.total_seconds(),
                                    backoff_max_s=cfg.envoy.restart_backoff_max.total_seconds())
        self._spawn_loops()
        self.started.set()
        log.info("gateway ready on %s:%d (platform %s, config %s)", cfg.listen.address, cfg.listen.port,
                 platform.name, self.attested.digest)

    async def _serve_control(self, run_dir: Path) -> None:
        """The evidence API and reflection (behind Envoy), the operator port and admin socket, ext_authz."""
        assert self.identity is not None and self.attested.plan is not None
        control, repo, attested = self.config.control, self.repository, self.attested
        self.evidence_api = EvidenceApi(
            self.identity, manifest=lambda: repo.manifest.to_json() if repo.manifest else None,
            security_config=lambda: {"digest": attested.digest, "config": attested.security_config()},
            readiness=self.readiness,
            limiter=FairEvidenceLimiter(control.evidence_rate_per_second, control.evidence_burst))
        await self.servers.serve_unix(self.evidence_api.app(), run_dir / "control.sock")
        await self.servers.serve_grpc(reflection_server(), run_dir / "reflection.sock")
        operator = OperatorApi(families=lambda: facts.metric_families(self._facts()), healthz=self.evidence_api.healthz,
                               status=lambda: facts.status(self._facts()), rotate=self.rotate,
                               exposition=[self.data_plane.envoy_stats, self.upstream.metrics_text],
                               reload=self.reload_models, xds_version=lambda: self._snapshot_version)
        await self.servers.serve_tcp(operator.operator_app(), control.metrics_address, control.metrics_port)
        await self.servers.serve_unix(operator.admin_app(), run_dir / "admin.sock")
        if attested.plan.auth is not None:
            from .authz import authz_server
            await self.servers.serve_grpc(authz_server(attested.plan.auth), run_dir / "authz.sock")

    def _spawn_loops(self) -> None:
        triton, identity, policy = self.config.triton, self.identity, self.attested.policy
        assert identity is not None and policy is not None and self.data_plane.admin is not None
        retry = self.config.identity.retry_interval.total_seconds()
        self.tasks.spawn(rotate_when_due(identity, self.rotate, retry), self.data_plane.watch_socket(),
                         self.upstream.supervise(triton.restart_backoff_max.total_seconds()))
        if self.tickets is not None:
            self.tasks.spawn(self.tickets.rotate_every(self.publish))
        if self.repository.watch is not None:
            interval = triton.watch_interval.total_seconds()
            self.tasks.spawn(self.repository.follow(interval, self.upstream, self.publish))
        if self.attested.access_log_path is not None:
            self.tasks.spawn(self.access_log.run(self.attested.access_log_path, policy.limits.access_log_max_bytes,
                                                 self.data_plane.admin))

    # ---- the attested state, pushed to Envoy ----
    def _upstreams(self) -> ec.Upstreams:
        """Envoy's clusters: Triton, and the control plane's sockets."""
        end, run, plan = self.upstream.endpoint, self.run.path, self.attested.plan
        assert end is not None and run is not None
        return ec.Upstreams(end.host, end.http_port, end.grpc_port, run / "control.sock", run / "reflection.sock",
                            run / "authz.sock" if plan is not None and plan.auth is not None else None)

    def _snapshot(self, version: str) -> Snapshot:
        assert self.identity is not None and self.identity.current is not None
        return build_snapshot(version, SnapshotInputs(
            self.identity.current, self._upstreams(), self.listener_options, self.attested.plan,
            self.upstream.refusal(),
            self.tickets.for_certificate(self.identity.current.serial).keys if self.tickets is not None else ()))

    async def publish(self) -> str:
        return await self.data_plane.push(self._snapshot)

    async def rotate(self) -> int:
        assert self.identity is not None
        return await rotate_certificate(self.identity, self.publish)

    async def reload_models(self) -> dict[str, Any]:
        if self._reload is None or self.repository.watch is None:
            raise ConfigError("no model repository to reload: triton.model_repository is not set")
        return await self._reload.reload()

    # ---- health: each component's own facts, in this order ----
    def _facts(self) -> list[facts.Facts]:
        return [IdentityFacts(self.identity, lambda: self.platform), self.data_plane, self.access_log, self.upstream,
                self.repository, self.attested, self.gpus, *([self.tickets] if self.tickets else []),
                *([self.evidence_api] if self.evidence_api else [])]

    def readiness(self) -> list[str]:
        return facts.readiness(self._facts())

    # ---- shutdown ----
    async def stop(self) -> None:
        await self.tasks.cancel_all()
        await self.data_plane.stop()
        await self.servers.stop()
        await self.upstream.close()
        self.run.cleanup()
        self.stopped.set()
        log.info("gateway stopped")

    async def run_forever(self) -> None:
        await run_until_stopped(self.start, self.stop, self._on_sighup)

    async def _on_sighup(self) -> None:
        if self.started.is_set():
            await reload_or_rotate(self.repository.watch is not None, self.reload_models, self.rotate)
