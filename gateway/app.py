"""The gateway control plane: one asyncio process that owns the key, the evidence, the
configuration and the processes (DESIGN.md §1)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from aiohttp import web

from filters.compile import compile_policy, refusal_routes
from filters.envoy_names import ROUTE_UPSTREAM_REFUSED
from ratls.canonical import config_digest
from ratls.errors import ConfigError, RatlsError, UpstreamUnavailable
from ratls.registry import Platform
from ratls.timeutil import parse_duration, utcnow
from triton_backend import hardening
from triton_backend.demo import demo_repository
from triton_backend.launch import TritonConfig, TritonProcess
from triton_backend.manifest import Manifest, ManifestError, RepositoryWatch, build_manifest

from . import envoy_config as ec
from .config import GatewayConfig
from .evidence_api import EvidenceApi
from .evidence_limiter import FairEvidenceLimiter
from .http_server import QuietAppRunner
from .identity import IdentityManager
from .metrics import MetricFamily, render
from .ports import ports_free
from .reflection import ReflectionIndex, handlers
from .supervisor import Backoff, EnvoySupervisor, locate_envoy
from .tee_platform import build_platform
from .xds.server import AdsServicer, XdsServer
from .xds.snapshot import Snapshot

log = logging.getLogger("ratls.gateway")


ADMIN_ROTATE_MIN_INTERVAL_S = 1.0
ACCESS_LOG_CHECK_S = 1.0


def _seconds(text: str, what: str) -> float:
    return parse_duration(text, what=what).total_seconds()


def _served_digest(served: Path | None, expected: RepositoryWatch | None) -> str | None:
    if served is None:
        return None
    if expected is not None and expected.describes(served):
        return expected.manifest.digest
    try:
        return build_manifest(served).digest
    except ManifestError as exc:
        return f"unmeasurable: {exc}"


async def _measured(repo: Path) -> RepositoryWatch:
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


class Gateway:
    def __init__(self, config: GatewayConfig, *, platform: Platform | None = None) -> None:
        self.config = config
        self._platform = platform
        self.run_dir: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.triton: TritonProcess | None = None
        self.manifest: Manifest | None = None
        self.watch: RepositoryWatch | None = None
        self.repository_changes: list[str] = []
        self.identity: IdentityManager | None = None
        self.ads = AdsServicer()
        self.xds: XdsServer | None = None
        self.envoy: EnvoySupervisor | None = None
        self.upstream_ready = False
        self.upstream_problem: str | None = None  # why an external Triton that answers is not used
        self._checked_listeners: tuple[int, ...] = ()  # its listening sockets when it last passed the check
        self.triton_restarts = 0
        self.xds_socket_recreated = 0
        self._version = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._runners: list[web.AppRunner] = []
        self._grpc: grpc.aio.Server | None = None
        self.evidence_api: EvidenceApi | None = None
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.listener_options = ec.ListenerOptions(address=config.listen.address, port=config.listen.port,
                                                   tls_min_version=config.listen.tls_min_version)
        self.security_digest = ""
        self._upstreams: ec.Upstreams | None = None
        self.filter_policy: Any = None
        self.filter_plan: Any = None
        self.access_log_path: Path | None = None
        self._authz_server: grpc.aio.Server | None = None
        self.authz: Any = None
        self._rotating = False
        self._last_admin_rotation = -ADMIN_ROTATE_MIN_INTERVAL_S
        self._reloading = False  # Triton is being restarted on purpose: not a crash to recover from
        self._reload_lock = asyncio.Lock()
        # managed: the digest of the snapshot Triton was last started on (what it really serves)
        self.served_digest: str | None = None
        self._reload_refusal: str | None = None  # set while re-attesting, and when that failed midway
        # external: Triton's listeners when the repository last changed state (to tell whether
        # Triton was restarted - reloaded its models - since)
        self._listeners_at_transition: Any = None
        self._triton_lock = asyncio.Lock()  # one (re)start at a time: crash recovery or a reload
        self._server_metadata: dict[str, Any] | None = None
        self.access_log_rotations = 0

    # ---- derived ----
    @property
    def platform(self) -> Platform:
        if self._platform is None:
            self._platform = build_platform(self.config.identity)
        return self._platform

    def security_config(self) -> dict[str, Any]:
        return self.config.security_view(self.filter_policy.canonical() if self.filter_policy else None)

    def _security_digest(self) -> str:
        return config_digest(self.security_config())

    # ---- start-up ----
    async def start(self) -> None:
        cfg = self.config
        try:
            if cfg.control.run_dir:
                self.run_dir = Path(cfg.control.run_dir)
                self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            else:
                self._tmp = tempfile.TemporaryDirectory(prefix="ratls-gw-")
                self.run_dir = Path(self._tmp.name)
            os.chmod(self.run_dir, 0o700)
        except OSError as exc:  # not ours to chmod, a read-only filesystem, a missing parent
            where = Path(cfg.control.run_dir or tempfile.gettempdir())
            owner = f"it belongs to uid {where.stat().st_uid}, " if where.exists() else ""
            raise ConfigError(f"cannot use control.run_dir {where}: {exc.strerror} ({owner}the gateway runs as "
                              f"uid {os.getuid()})",
                              hint="give the run directory to the gateway's user (a tmpfs mounted with its uid), "
                                   "or point control.run_dir elsewhere") from None
        self._raise_file_limit()
        ports_free([("listen", cfg.listen.address, cfg.listen.port),
                    ("control.metrics", cfg.control.metrics_address, cfg.control.metrics_port)])
        platform = self.platform  # fail early (and loudly) when no TEE and not sim
        if platform.simulated:
            log.warning("identity platform is SIMULATED: certificates carry no hardware evidence")
        await self._start_triton()
        self._server_metadata = await self._triton_metadata()
        self._compile_filters(self._server_metadata)
        self.security_digest = self._security_digest()
        self.identity = IdentityManager(
            platform, lifetime=cfg.identity.lifetime_td, rotate_at=cfg.identity.rotate_at,
            curve=cfg.identity.key_curve, sans=cfg.identity.sans, common_name=cfg.identity.common_name,
            models=self.manifest.claims() if self.manifest else None, config_digest=self.security_digest)
        await self.identity.issue_async()
        await self._start_control_servers()
        if self.filter_plan is not None and self.filter_plan.auth is not None:
            from .authz import start_authz_server
            assert self._upstreams is not None
            self._upstreams.authz_socket = self.run_dir / "authz.sock"
            self._authz_server, self.authz = await start_authz_server(self._upstreams.authz_socket,
                                                                     self.filter_plan.auth)
        self.xds = XdsServer(self.run_dir / "xds.sock", self.ads)
        await self.xds.start()
        await self.publish()
        plan = self.filter_plan
        bootstrap = ec.bootstrap(self.run_dir / "xds.sock", self.run_dir / "envoy-admin.sock",
                                 overload=plan.overload_manager or None)
        ec.write_bootstrap(self.run_dir / "envoy.json", bootstrap)
        self.envoy = EnvoySupervisor(locate_envoy(cfg.envoy.binary), self.run_dir / "envoy.json",
                                     self.run_dir / "envoy.log", log_level=cfg.envoy.log_level,
                                     concurrency=cfg.envoy.concurrency,
                                     drain_time_s=int(_seconds(cfg.envoy.drain_time, "envoy.drain_time")),
                                     backoff_max=_seconds(cfg.envoy.restart_backoff_max, "envoy.restart_backoff_max"),
                                     on_start=self._on_envoy_start)
        await self.envoy.start()
        if not await self.ads.wait_acked(self._snapshot_version, timeout=30):
            raise ConfigError(f"envoy did not accept the configuration: {self.xds_problems() or 'no ACK'}; "
                              f"envoy log:\n{self.envoy.log_tail()}")
        await self._wait_listening(timeout=15)
        self._tasks += [asyncio.create_task(self._rotation_loop()), asyncio.create_task(self._upstream_loop()),
                        asyncio.create_task(self._socket_watchdog())]
        if self.watch is not None:
            self._tasks.append(asyncio.create_task(self._watch_loop()))
        if self.access_log_path is not None:
            self._tasks.append(asyncio.create_task(self._access_log_loop(self.access_log_path)))
        self.started.set()
        log.info("gateway ready on %s:%d (platform %s, config %s)", cfg.listen.address, cfg.listen.port,
                 platform.name, self.security_digest)

    def _raise_file_limit(self) -> None:
        """Envoy inherits our descriptor limit: the attested max_connections must fit in it
        (a stock login shell gives 1024, which idle sockets would exhaust long before)."""
        import resource

        lim = self._configured_filter_policy().limits
        needed = lim.max_connections + 2 * lim.upstream_max_requests + lim.upstream_max_streams + 512
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise ConfigError(f"the open-file limit ({hard}) is below what filters.limits.max_connections "
                              f"({lim.max_connections}) and the upstream budgets need ({needed})",
                              hint="raise it (systemd LimitNOFILE=, docker --ulimit nofile=, ulimit -Hn) or lower "
                                   "filters.limits.max_connections")
        if soft != resource.RLIM_INFINITY and soft < needed:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def _configured_filter_policy(self) -> Any:
        policy = self.config.filter_policy
        if policy is None:
            from filters.policy import parse_filter_policy
            policy = parse_filter_policy(self.config.filters)
        return policy

    def _denied_triton_groups(self) -> tuple[str, ...]:
        """Triton API groups the policy denies: Triton refuses them itself, to everyone. Taken
        from the exposure rules even with filters off (Triton then still enforces the denies);
        health never, since the gateway's own readiness probe needs it."""
        from triton_backend.catalog import RESTRICTED_API_GROUP, Category, Exposure

        exposure = self._configured_filter_policy().exposure
        groups = []
        for category, group in RESTRICTED_API_GROUP.items():
            if category is Category.HEALTH or exposure[category] is Exposure.ALLOW:
                continue
            if category is Category.INFERENCE and exposure[Category.GENERATE] is Exposure.ALLOW:
                continue  # generate is part of Triton's inference group
            groups.append(group)
        return tuple(groups)

    async def _triton_metadata(self) -> dict[str, Any] | None:
        assert self._upstreams is not None
        url = f"http://{self._upstreams.triton_host}:{self._upstreams.triton_http_port}/v2"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        doc = await resp.json(content_type=None)
                        return doc if isinstance(doc, dict) else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            log.warning("Triton's server metadata unavailable (%s): GET /v2 is forwarded to Triton, "
                        "extensions unfiltered", type(exc).__name__)
        return None

    def _compile_filters(self, server_metadata: dict[str, Any] | None = None) -> None:
        policy = self._configured_filter_policy()
        if policy.models is None:
            if self.manifest is None:
                raise ConfigError("filters.models: list the models clients may call (the gateway has no model "
                                  "repository to take them from)", hint="or set triton.model_repository")
            policy = policy.with_models(list(self.manifest.model_digests()))
        self.filter_policy = policy
        assert self.run_dir is not None
        log_target = policy.access_log
        path = str(self.run_dir / "access.log") if log_target == "run_dir" else log_target
        served = list(self.manifest.model_digests()) if self.manifest else None
        self.filter_plan = compile_policy(policy, access_log_path=path, served_models=served,
                                          server_metadata=server_metadata)
        self.access_log_path = Path(path) if path not in (None, "stdout") else None
        opts = self.listener_options
        opts.http_filters = self.filter_plan.http_filters
        opts.pre_routes = self.filter_plan.pre_routes
        opts.routes = self.filter_plan.routes
        opts.hcm_extras = self.filter_plan.hcm_extras
        opts.network_filters = self.filter_plan.network_filters
        opts.route_extras = self.filter_plan.route_extras
        opts.filter_chain_extras = self.filter_plan.filter_chain_extras
        opts.listener_extras = self.filter_plan.listener_extras
        if self.filter_plan.auth is not None:
            opts.client_ca_pem = self.filter_plan.auth.mtls_ca_pem

    async def _start_triton(self) -> None:
        t = self.config.triton
        if t.mode == "managed":
            repo = Path(t.model_repository) if t.model_repository else demo_repository()
            await self._measure(repo)
            self.triton = TritonProcess(TritonConfig(
                repo, http_port=t.http_port, grpc_port=t.grpc_port, metrics_port=t.metrics_port, binary=t.binary,
                ready_timeout=_seconds(t.ready_timeout, "triton.ready_timeout"),
                work_dir=(self.run_dir / "triton") if self.run_dir else None,
                deny_apis=self._denied_triton_groups()))
            try:
                await self._start_managed_triton()
                await asyncio.to_thread(self.triton.wait_ready)
            except Exception as exc:  # noqa: BLE001 - TritonError, TritonNotFound, OSError alike
                raise ConfigError(f"Triton did not start: {exc}") from None
            host, http_port, grpc_port = "127.0.0.1", self.triton.config.http_port, self.triton.config.grpc_port
            self.upstream_ready = True
        else:
            host, http_port, grpc_port = t.host, t.http_port, t.grpc_port
            if t.model_repository:
                await self._measure(Path(t.model_repository))
            report = await self._wait_for_external_triton(f"http://{host}:{http_port}", [http_port, grpc_port])
            if not report.ok:
                message = "; ".join(report.problems)
                if t.on_exposed == "refuse":
                    raise ConfigError(f"external Triton failed the hardening check: {message}",
                                      hint="start Triton with the flags README lists (loopback addresses, "
                                           "--model-control-mode=none)")
                log.warning("external Triton failed the hardening check (continuing, on_exposed=warn): %s", message)
            self._checked_listeners = self._listeners_at_transition = report.listeners
            self.upstream_ready = True
        assert self.run_dir is not None
        self._upstreams = ec.Upstreams(host, http_port, grpc_port, self.run_dir / "control.sock",
                                       self.run_dir / "reflection.sock")

    async def _measure(self, repo: Path) -> None:
        self.watch = await _measured(repo)
        self.manifest = self.watch.manifest

    async def _start_managed_triton(self, expected: RepositoryWatch | None = None) -> None:
        """(Re)start the managed Triton on a fresh snapshot of the repository, and measure that
        snapshot: what Triton serves is then known, whatever happened to the source meanwhile.
        A snapshot of hard links to exactly the files *expected* measured is not hashed again."""
        assert self.triton is not None
        expected = expected or self.watch
        async with self._triton_lock:
            await asyncio.to_thread(self.triton.stop)
            self.triton.start()  # on the loop thread: see TritonProcess.start (PDEATHSIG)
            self.served_digest = await asyncio.to_thread(_served_digest, self.triton.served_repository, expected)

    def _repository_refusal(self) -> str | None:
        """Why nothing may reach Triton because of the model repository, or None."""
        if self._reload_refusal is not None:
            return self._reload_refusal
        if self.config.triton.on_repository_change != "refuse" or self.manifest is None:
            return None
        if self.served_digest is not None and self.served_digest != self.manifest.digest:
            return "Triton serves a model repository other than the attested one"
        if self.repository_changes:
            return "model repository changed after attestation"
        return None

    def _current_listeners(self) -> Any:
        t = self.config.triton
        return hardening.listener_inodes([t.http_port, t.grpc_port])

    async def reload_models(self) -> dict[str, Any]:
        """Re-attest the model repository after an update (SIGHUP, POST /admin/reload). Nothing
        reaches Triton while this runs. The repository is measured; a managed Triton is
        restarted on a snapshot that must measure the same (an external one must have been
        restarted since the repository last changed); a new certificate names the new models
        and config; then traffic flows again. A repository that cannot be measured changes
        nothing (409). A failure after that keeps the old claims and keeps refusing until a
        reload succeeds (what Triton now serves is not what the old certificate names)."""
        if self.watch is None or self.identity is None:
            raise ConfigError("no model repository to reload: triton.model_repository is not set")
        async with self._reload_lock:
            watch = await _measured(self.watch.repository)
            manifest, old, old_watch = watch.manifest, self.manifest, self.watch
            self._reload_refusal = "the model repository is being re-attested"
            await self.publish()
            try:
                await self._serve_repository(watch)
                self._adopt(watch)
                await self.identity.issue_async()
            except Exception:
                if self.manifest is not old:
                    self.watch = old_watch
                    self._adopt_claims(old)
                self._reload_refusal = None if self._serves(old) else "re-attestation failed; reload again"
                await self.publish()
                raise
            self._reload_refusal = None
            self.repository_changes = []
            await self.publish()
            changed = old is None or manifest.digest != old.digest
            log.info("model repository re-attested (changed: %s): manifest %s, config %s, certificate %d",
                     changed, manifest.digest, self.security_digest, self.identity.current.serial)
            return {"serial": self.identity.current.serial, "manifest": manifest.digest, "changed": changed,
                    "models": manifest.model_digests(), "config_digest": self.security_digest}

    def _serves(self, manifest: Manifest | None) -> bool:
        """Whether Triton is known to serve *manifest* (managed: the measured snapshot)."""
        return manifest is not None and (self.triton is None or self.served_digest == manifest.digest)

    async def _serve_repository(self, watch: RepositoryWatch) -> None:
        """Make Triton serve the repository *watch* measured (model control is off: a restart)."""
        manifest = watch.manifest
        if self.triton is None:
            changed = self.manifest is None or manifest.digest != self.manifest.digest
            if changed and self._current_listeners() == self._listeners_at_transition:
                raise ConfigError("the external Triton was not restarted since the repository changed, so it "
                                  "still serves the models it loaded before",
                                  hint="restart Triton on the updated repository, then reload again")
            if not await self._external_triton_still_hardened() and self.config.triton.on_exposed == "refuse":
                raise UpstreamUnavailable("the external Triton failed the hardening check; nothing was re-attested",
                                          hint="restart Triton on the updated repository with README's flags, "
                                               "then reload again")
            self._listeners_at_transition = self._current_listeners()
            return
        if self.served_digest == manifest.digest:
            return  # already serving exactly this: no restart needed
        self._reloading = True
        self.upstream_ready = False
        try:
            await self._start_managed_triton(watch)
            await asyncio.to_thread(self.triton.wait_ready)
        except Exception as exc:  # noqa: BLE001 - TritonError, OSError alike: reported, the old claims stay
            raise UpstreamUnavailable(f"Triton did not start on the updated repository: {exc}",
                                      hint="fix the model (Triton's log says why) and reload again") from None
        finally:
            self._reloading = False
        if self.served_digest != manifest.digest:
            raise ConfigError("the model repository changed again while it was re-attested",
                              hint="wait until the update is complete, then reload again")
        self.upstream_ready = True

    def _adopt(self, watch: RepositoryWatch) -> None:
        self.watch = watch
        self._adopt_claims(watch.manifest)

    def _adopt_claims(self, manifest: Manifest | None) -> None:
        """The attested state follows *manifest*: filters (its models), config digest, claims."""
        assert self.identity is not None
        self.manifest = manifest
        self._compile_filters(self._server_metadata)
        self.security_digest = self._security_digest()
        self.identity.models = manifest.claims() if manifest else None
        self.identity.config_digest = self.security_digest

    async def _wait_for_external_triton(self, url: str, ports: list[int]) -> hardening.HardeningReport:
        """An external Triton is often started after the gateway (compose, systemd) and takes a
        while to load its models: wait for it to answer, up to triton.ready_timeout."""
        timeout = _seconds(self.config.triton.ready_timeout, "triton.ready_timeout")
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

    async def _start_control_servers(self) -> None:
        assert self.run_dir is not None and self.identity is not None
        self.evidence_api = EvidenceApi(
            self.identity, manifest=lambda: self.manifest.to_json() if self.manifest else None,
            security_config=lambda: {"digest": self.security_digest, "config": self.security_config()},
            readiness=self.readiness,
            limiter=FairEvidenceLimiter(self.config.control.evidence_rate_per_second,
                                        self.config.control.evidence_burst))
        await self._serve_private(self.evidence_api.app(), self.run_dir / "control.sock")
        self._grpc = grpc.aio.server()
        self._grpc.add_generic_rpc_handlers(handlers(ReflectionIndex()))
        old = os.umask(0o177)
        try:
            self._grpc.add_insecure_port(f"unix:{self.run_dir / 'reflection.sock'}")
            await self._grpc.start()
        finally:
            os.umask(old)
        operator = web.Application()
        operator.router.add_get("/metrics", self._metrics_handler)
        operator.router.add_get("/healthz", self.evidence_api.healthz)
        operator.router.add_get("/admin/status", self._status_handler)
        op_runner = QuietAppRunner(operator, access_log=None)
        await op_runner.setup()
        await web.TCPSite(op_runner, self.config.control.metrics_address, self.config.control.metrics_port).start()
        self._runners.append(op_runner)
        # Actions that cost hardware evidence are not on the TCP operator port (any local process
        # can reach that): only on a 0600 unix socket, i.e. the gateway's own user and root.
        admin = web.Application()
        admin.router.add_post("/admin/rotate", self._rotate_handler)
        admin.router.add_post("/admin/reload", self._reload_handler)
        admin.router.add_get("/admin/status", self._status_handler)
        await self._serve_private(admin, self.run_dir / "admin.sock")

    async def _serve_private(self, app: web.Application, path: Path) -> None:
        """Serve *app* on a unix socket created 0600 (the umask closes the window before chmod)."""
        runner = QuietAppRunner(app, access_log=None)
        await runner.setup()
        old = os.umask(0o177)
        try:
            await web.UnixSite(runner, str(path)).start()
        finally:
            os.umask(old)
        self._runners.append(runner)

    async def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        host = "127.0.0.1" if self.config.listen.address in ("0.0.0.0", "::") else self.config.listen.address  # noqa: S104
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection(host, self.config.listen.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise ConfigError(f"envoy is not accepting connections on port {self.config.listen.port}",
                          hint="is the port in use by another process?")

    # ---- snapshots ----
    @property
    def _snapshot_version(self) -> str:
        return str(self._version)

    def build_snapshot(self, version: str) -> Snapshot:
        assert self.identity is not None and self.identity.current is not None and self._upstreams is not None
        ident = self.identity.current
        routes = None
        refusal = self._repository_refusal()  # the served models are not (known to be) the attested ones
        if refusal is None and self.upstream_problem and self.config.triton.on_exposed == "refuse":
            refusal = "Triton failed the hardening check"  # what answers on its port is not what was checked
        if refusal is not None:
            # Fail closed: nothing reaches Triton until the cause is gone.
            routes = refusal_routes(ROUTE_UPSTREAM_REFUSED, 503, refusal)
        return Snapshot(version, {
            ec.TYPE_CLUSTER: {c.name: c for c in ec.clusters(
                self._upstreams, self.filter_plan.cluster_extras if self.filter_plan else None,
                self.filter_plan.stream_cluster_extras if self.filter_plan else None)},
            ec.TYPE_SECRET: {ec.SECRET_NAME: ec.secret(ident.cert_pem, ident.key_pem())},
            ec.TYPE_ROUTE: {ec.ROUTE_NAME: ec.route_configuration(self.listener_options, routes)},
            ec.TYPE_LISTENER: {ec.LISTENER_NAME: ec.listener(self.listener_options)},
        })

    async def publish(self) -> str:
        self._version += 1
        await self.ads.set_snapshot(self.build_snapshot(self._snapshot_version))
        return self._snapshot_version

    async def _on_envoy_start(self) -> None:
        # A new Envoy process knows nothing yet: readiness waits for its own ACKs, not for
        # the ones its predecessor sent.
        self.ads.status.forget_acks()

    def xds_problems(self) -> str:
        return "; ".join(f"{t.rsplit('.', 1)[-1]} v{s.nacked_version}: {s.last_nack}"
                         for t, s in self.ads.status.types.items() if s.last_nack)

    # ---- background loops ----
    async def rotate(self) -> int:
        assert self.identity is not None
        identity = await self.identity.issue_async()
        version = await self.publish()
        log.info("rotated to certificate %d (xds version %s)", identity.serial, version)
        return identity.serial

    async def _rotation_loop(self) -> None:
        assert self.identity is not None
        retry = _seconds(self.config.identity.retry_interval, "identity.retry_interval")
        while True:
            due = self.identity.rotation_due(utcnow())
            await asyncio.sleep(max(0.0, (due - utcnow()).total_seconds()))
            try:
                await self.rotate()
            except RatlsError:
                # Keep serving the still-valid certificate; the alarm is the metric and the log.
                await asyncio.sleep(retry)

    async def _upstream_loop(self) -> None:
        backoff = Backoff(maximum=_seconds(self.config.triton.restart_backoff_max, "triton.restart_backoff_max"))
        assert self._upstreams is not None
        url = f"http://{self._upstreams.triton_host}:{self._upstreams.triton_http_port}/v2/health/ready"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                if self.triton is not None and not self.triton.running and not self._reloading:
                    self.upstream_ready = False
                    delay = backoff.next()
                    log.error("Triton exited (code %s); restarting in %.1fs. Log tail:\n%s",
                              self.triton.proc.returncode if self.triton.proc else None, delay,
                              self.triton.log_tail(10))
                    await asyncio.sleep(delay)
                    if self._reloading or self.triton.running:
                        continue  # a reload took over the restart while this one waited
                    refused = self._repository_refusal()
                    try:
                        await self._start_managed_triton()
                        self.triton_restarts += 1
                    except Exception as exc:  # noqa: BLE001 - keep supervising whatever failed
                        log.error("Triton restart failed: %s", exc)
                    if self._repository_refusal() != refused:
                        log.error("Triton restarted on a repository that is not the attested one: refusing")
                        await self.publish()
                    continue
                if self.triton is not None:
                    # regions the backend adds later (larger tensors) are made private within a second
                    await asyncio.to_thread(self.triton.make_shm_private)
                try:
                    async with session.get(url) as resp:
                        ready = resp.status == 200
                except (aiohttp.ClientError, OSError, TimeoutError):
                    ready = False
                refusing = self.upstream_problem is not None and self.config.triton.on_exposed == "refuse"
                if ready and self.triton is None and (not self.upstream_ready or refusing
                                                      or self._current_listeners() != self._checked_listeners):
                    # an external Triton that went away may come back as something else (another
                    # process on the port, other flags): re-check before serving through it again
                    ready = await self._external_triton_still_hardened()
                if ready and not self.upstream_ready:
                    log.info("Triton is ready")
                    backoff.reset()
                elif not ready and self.upstream_ready:
                    log.error("Triton is not ready")
                self.upstream_ready = ready
                await asyncio.sleep(1.0)

    async def _external_triton_still_hardened(self) -> bool:
        t = self.config.triton
        report = await asyncio.to_thread(hardening.check, f"http://{t.host}:{t.http_port}", [t.http_port, t.grpc_port])
        problem = "; ".join(report.problems) if not report.ok else None
        acceptable = report.ok or (report.answered and t.on_exposed == "warn")
        if acceptable:
            self._checked_listeners = report.listeners
        if problem != self.upstream_problem:
            if problem:
                log.error("external Triton failed the hardening check after reconnecting (on_exposed=%s): %s",
                          t.on_exposed, problem)
            else:
                log.info("external Triton passed the hardening check again")
            self.upstream_problem = problem
            if t.on_exposed == "refuse":
                await self.publish()  # Envoy stops (or resumes) forwarding, not only /healthz
        return acceptable

    async def _socket_watchdog(self) -> None:
        """Recreate the xDS socket if it disappears (an over-eager tmp cleaner, an operator):
        Envoy's open ADS stream survives an unlink, but a restarted Envoy could not reconnect."""
        assert self.xds is not None
        while True:
            await asyncio.sleep(1.0)
            if not self.xds.socket_path.exists():
                self.xds_socket_recreated += 1
                log.error("xDS socket %s disappeared; re-creating it", self.xds.socket_path)
                await self.xds.stop(grace=0.5)
                await self.xds.start()

    async def _access_log_loop(self, path: Path) -> None:
        """Envoy's file log never rotates; on a tmpfs run dir it is RAM. Past the attested size
        it is moved to <name>.1 (replacing the previous one) and Envoy reopens its log; a reopen
        that did not happen is retried until Envoy writes to a new file again."""
        limit = self.filter_policy.limits.access_log_max_bytes
        reopen_pending = False
        while True:
            await asyncio.sleep(ACCESS_LOG_CHECK_S)
            try:
                if not reopen_pending:
                    if path.stat().st_size <= limit:
                        continue
                    os.replace(path, path.with_name(path.name + ".1"))
                    self.access_log_rotations += 1
                reopen_pending = await self._envoy_admin("POST", "/reopen_logs") is None or not path.exists()
            except FileNotFoundError:
                reopen_pending = True  # moved, and Envoy has not reopened yet
            except OSError as exc:
                log.error("access log rotation failed: %s", exc.strerror or exc)

    async def _envoy_admin(self, method: str, path: str) -> str | None:
        assert self.run_dir is not None
        connector = aiohttp.UnixConnector(path=str(self.run_dir / "envoy-admin.sock"))
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=3)) as s:
                async with s.request(method, f"http://envoy{path}") as resp:
                    return await resp.text()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None

    async def _watch_loop(self) -> None:
        assert self.watch is not None
        interval = _seconds(self.config.triton.watch_interval, "triton.watch_interval")
        while True:
            await asyncio.sleep(interval)
            watch = self.watch
            changes = await asyncio.to_thread(watch.changes)
            if watch is not self.watch:
                continue  # re-attested meanwhile: this answer is about the previous manifest
            if not changes and self.repository_changes:
                if self.triton is None and self._current_listeners() != self._listeners_at_transition:
                    # an external Triton restarted meanwhile loaded the changed repository
                    self.repository_changes = ["Triton was restarted while the repository differed from the "
                                               "attested one; restart it again, then POST /admin/reload"]
                    continue
                self.repository_changes = []
                log.info("model repository is back to its attested state")
                await self.publish()
            elif changes and changes != self.repository_changes:
                if not self.repository_changes:
                    self._listeners_at_transition = self._current_listeners() if self.triton is None else None
                self.repository_changes = changes
                log.error("model repository changed after attestation (%s): %s",
                          self.config.triton.on_repository_change, "; ".join(changes[:10]))
                if self.config.triton.on_repository_change == "refuse":
                    await self.publish()

    # ---- health, metrics, admin ----
    def readiness(self) -> list[str]:
        reasons = []
        ident = self.identity.current if self.identity else None
        if ident is None:
            reasons.append("no certificate")
        elif ident.not_after <= utcnow():
            reasons.append("certificate expired")
        if self.envoy is None or self.envoy.pid is None:
            reasons.append("data plane not running")
        elif not self.ads.status.fully_acked(self._snapshot_version):
            reasons.append("configuration not yet accepted by the data plane")
        if not self.upstream_ready:
            reasons.append(f"upstream unavailable: {self.upstream_problem}" if self.upstream_problem
                           else "upstream unavailable")
        repository = self._repository_refusal()
        if repository is not None:
            reasons.append(repository)
        return reasons

    def metric_families(self) -> list[MetricFamily]:
        ident = self.identity.current if self.identity else None
        fams = [
            MetricFamily("ratls_ready", "gauge", "1 when the gateway serves attested traffic").add(
                0 if self.readiness() else 1),
            MetricFamily("ratls_certificate_expiry_timestamp_seconds", "gauge",
                         "notAfter of the served certificate").add(ident.not_after.timestamp() if ident else 0),
            MetricFamily("ratls_certificate_serial", "gauge", "rotation counter of the served certificate").add(
                ident.serial if ident else 0),
            MetricFamily("ratls_certificate_rotations_total", "counter", "certificate rotations").add(
                self.identity.rotations if self.identity else 0),
            MetricFamily("ratls_evidence_failures_total", "counter", "failed evidence collections").add(
                self.identity.evidence_failures if self.identity else 0),
            MetricFamily("ratls_simulated", "gauge", "1 when the platform is SIMULATED").add(
                1 if self.platform.simulated else 0),
            MetricFamily("ratls_xds_snapshot_version", "gauge", "latest published snapshot").add(self._version),
            MetricFamily("ratls_envoy_restarts_total", "counter", "Envoy restarts after a crash").add(
                self.envoy.restarts if self.envoy else 0),
            MetricFamily("ratls_upstream_ready", "gauge", "Triton readiness").add(1 if self.upstream_ready else 0),
            MetricFamily("ratls_triton_restarts_total", "counter", "managed Triton restarts").add(self.triton_restarts),
            MetricFamily("ratls_xds_socket_recreated_total", "counter", "xDS socket re-created after removal").add(
                self.xds_socket_recreated),
            MetricFamily("ratls_access_log_rotations_total", "counter", "access log rotations at its size cap").add(
                self.access_log_rotations),
            MetricFamily("ratls_model_repository_changed", "gauge", "1 if the repository changed after attestation"
                         ).add(1 if self.repository_changes else 0),
        ]
        acked = MetricFamily("ratls_xds_acked_version", "gauge", "version Envoy ACKed, per resource type")
        nacks = MetricFamily("ratls_xds_nacks_total", "counter", "NACKs from Envoy, per resource type")
        for t, st in sorted(self.ads.status.types.items()):
            short = t.rsplit(".", 1)[-1]
            acked.add(float(st.acked_version or 0), type=short)
            nacks.add(st.nacks, type=short)
        fams += [acked, nacks]
        if self.evidence_api is not None:
            fams.append(MetricFamily("ratls_fresh_evidence_total", "counter", "fresh evidence served").add(
                self.evidence_api.evidence_served))
            fams.append(MetricFamily("ratls_fresh_evidence_rate_limited_total", "counter",
                                     "fresh evidence requests refused by the rate limit").add(
                self.evidence_api.evidence_limited))
        return fams

    async def envoy_stats(self) -> str:
        text = await self._envoy_admin("GET", "/stats/prometheus")
        return text if text is not None else "# envoy admin unavailable\n"

    def _triton_metrics_url(self) -> str | None:
        t = self.config.triton
        if self.triton is not None:
            return f"http://127.0.0.1:{self.triton.config.metrics_port}/metrics"
        return f"http://{t.host}:{t.metrics_port}/metrics" if t.metrics_port else None

    async def triton_metrics(self) -> str:
        """Triton's own metrics (nv_inference_*): its port is private to the VM, yet dashboards
        built on them must keep working behind the gateway."""
        url = self._triton_metrics_url()
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

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        text = render(self.metric_families()) + await self.envoy_stats() + await self.triton_metrics()
        return web.Response(text=text, content_type="text/plain")

    async def _rotate_handler(self, request: web.Request) -> web.Response:
        return await self._admin_action(self._rotated)

    async def _reload_handler(self, request: web.Request) -> web.Response:
        return await self._admin_action(self.reload_models)

    async def _rotated(self) -> dict[str, Any]:
        return {"serial": await self.rotate()}

    async def _admin_action(self, action: Any) -> web.Response:
        # Even the operator cannot turn the admin socket into an evidence flood.
        since = time.monotonic() - self._last_admin_rotation
        if self._rotating or since < ADMIN_ROTATE_MIN_INTERVAL_S:
            wait = max(1, math.ceil(ADMIN_ROTATE_MIN_INTERVAL_S - since))
            return web.json_response({"error": "a rotation ran moments ago; retry after the Retry-After seconds"},
                                     status=429, headers={"Retry-After": str(wait)})
        self._rotating = True
        self._last_admin_rotation = time.monotonic()
        try:
            result = await action()
        except ConfigError as exc:  # the repository or Triton's answer: nothing was re-attested
            return web.json_response({"error": exc.message, "hint": exc.hint}, status=409)
        except RatlsError as exc:
            return web.json_response({"error": str(exc)}, status=503)
        finally:
            self._rotating = False
        return web.json_response({**result, "xds_version": self._snapshot_version})

    async def _status_handler(self, request: web.Request) -> web.Response:
        ident = self.identity.current if self.identity else None
        return web.json_response({
            "ready": not self.readiness(), "reasons": self.readiness(),
            "platform": self.platform.name, "simulated": self.platform.simulated,
            "certificate": {"serial": ident.serial, "not_after": ident.not_after.isoformat()} if ident else None,
            "xds": {t.rsplit(".", 1)[-1]: vars(s) for t, s in self.ads.status.types.items()},
            "xds_version": self._snapshot_version,
            "envoy": {"pid": self.envoy.pid if self.envoy else None,
                      "restarts": self.envoy.restarts if self.envoy else 0},
            "triton": {"pid": self.triton.pid if self.triton else None, "ready": self.upstream_ready,
                       "http_port": self._upstreams.triton_http_port if self._upstreams else None,
                       "grpc_port": self._upstreams.triton_grpc_port if self._upstreams else None},
            "repository_changes": self.repository_changes,
            "config_digest": self.security_digest,
        })

    # ---- shutdown ----
    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception) as exc:  # noqa: BLE001 - shutting down regardless
                if not isinstance(exc, asyncio.CancelledError):
                    log.warning("background task failed during shutdown: %s", exc)
        if self.envoy is not None:
            await self.envoy.stop()
        if self.xds is not None:
            await self.xds.stop()
        if self._grpc is not None:
            await self._grpc.stop(0.5)
        if self._authz_server is not None:
            await self._authz_server.stop(0.5)
        for runner in self._runners:
            await runner.cleanup()
        if self.triton is not None:
            await asyncio.to_thread(self.triton.close)
        if self._tmp is not None:
            self._tmp.cleanup()
        self.stopped.set()
        log.info("gateway stopped")

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self._on_sighup()))
        try:
            # a stop request is honoured while starting too (waiting for Triton can take minutes)
            starting = asyncio.ensure_future(self.start())
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not starting.done():
                    starting.cancel()
                    log.info("stop requested during start-up")
                    await asyncio.gather(starting, return_exceptions=True)
                else:
                    starting.result()  # a start-up refusal propagates
                    await stop.wait()
            finally:
                stopping.cancel()
        finally:
            await self.stop()

    async def _on_sighup(self) -> None:
        """SIGHUP (systemctl reload): re-attest the model repository when there is one, else rotate."""
        if not self.started.is_set():
            return
        try:
            if self.watch is not None:
                result = await self.reload_models()
                log.info("reload on SIGHUP: certificate %d, manifest %s", result["serial"], result["manifest"])
            else:
                await self.rotate()
        except RatlsError as exc:
            log.error("reload on SIGHUP failed (the attested state is unchanged): %s", exc)
