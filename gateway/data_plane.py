"""The data plane: Envoy, configured only through xDS. This owns the ADS server on its unix
socket, the bootstrap, the supervised Envoy process, the versions of the snapshots pushed
and what Envoy ACKed of them."""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filters.policy import Limits
from ratls.errors import ConfigError

from . import envoy_config as ec
from .config import EnvoySection, ListenConfig
from .envoy_admin import EnvoyAdmin
from .facts import Facts
from .metrics import MetricFamily
from .supervisor import EnvoySupervisor, locate_envoy
from .xds.server import AdsServicer, XdsServer
from .xds.snapshot import Snapshot

log = logging.getLogger("ratls.gateway")


def raise_file_limit(lim: Limits) -> None:
    """Envoy inherits our descriptor limit: the attested max_connections must fit in it
    (a stock login shell gives 1024, which idle sockets would exhaust long before)."""
    needed = lim.max_connections + 2 * lim.upstream_max_requests + lim.upstream_max_streams + 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(f"the open-file limit ({hard}) is below what filters.limits.max_connections "
                          f"({lim.max_connections}) and the upstream budgets need ({needed})",
                          hint="raise it (systemd LimitNOFILE=, docker --ulimit nofile=, ulimit -Hn) or lower "
                               "filters.limits.max_connections")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class DataPlane(Facts):
    def __init__(self, envoy: EnvoySection, listen: ListenConfig) -> None:
        self.section, self.listen = envoy, listen
        self.ads = AdsServicer()
        self.xds: XdsServer | None = None
        self.envoy: EnvoySupervisor | None = None
        self.admin: EnvoyAdmin | None = None
        self.version = 0
        self.socket_recreated = 0

    @property
    def snapshot_version(self) -> str:
        return str(self.version)

    async def start(self, run_dir: Path, first: Callable[[str], Snapshot], overload: dict[str, Any] | None, *,
                    drain_time_s: float, backoff_max_s: float) -> None:
        """The xDS server with the *first* snapshot, then Envoy on a bootstrap that points only
        at it; returns once Envoy ACKed that snapshot and accepts connections on the public port."""
        self.admin = EnvoyAdmin(run_dir / "envoy-admin.sock")
        self.xds = XdsServer(run_dir / "xds.sock", self.ads)
        await self.xds.start()
        await self.push(first)
        await self._start_envoy(run_dir, overload, drain_time_s=drain_time_s, backoff_max_s=backoff_max_s)

    async def push(self, build: Callable[[str], Snapshot]) -> str:
        """Publish the snapshot *build* makes for the next version; returns that version."""
        self.version += 1
        await self.ads.set_snapshot(build(self.snapshot_version))
        return self.snapshot_version

    async def _start_envoy(self, run_dir: Path, overload: dict[str, Any] | None, *, drain_time_s: float,
                           backoff_max_s: float) -> None:
        ec.write_bootstrap(run_dir / "envoy.json", ec.bootstrap(run_dir / "xds.sock", run_dir / "envoy-admin.sock",
                                                               overload=overload))
        self.envoy = EnvoySupervisor(locate_envoy(self.section.binary), run_dir / "envoy.json",
                                     run_dir / "envoy.log", log_level=self.section.log_level,
                                     concurrency=self.section.concurrency, drain_time_s=int(drain_time_s),
                                     backoff_max=backoff_max_s, on_start=self._on_envoy_start)
        await self.envoy.start()
        if not await self.ads.wait_acked(self.snapshot_version, timeout=30):
            raise ConfigError(f"envoy did not accept the configuration: {self.xds_problems() or 'no ACK'}; "
                              f"envoy log:\n{self.envoy.log_tail()}")
        await self._wait_listening(timeout=15)

    async def _on_envoy_start(self) -> None:
        # A new Envoy process knows nothing yet: readiness waits for its own ACKs, not for
        # the ones its predecessor sent.
        self.ads.status.forget_acks()

    async def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        host = "127.0.0.1" if self.listen.address in ("0.0.0.0", "::") else self.listen.address  # noqa: S104
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection(host, self.listen.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise ConfigError(f"envoy is not accepting connections on port {self.listen.port}",
                          hint="is the port in use by another process?")

    async def watch_socket(self) -> None:
        """Recreate the xDS socket if it disappears (an over-eager tmp cleaner, an operator):
        Envoy's open ADS stream survives an unlink, but a restarted Envoy could not reconnect."""
        assert self.xds is not None
        while True:
            await asyncio.sleep(1.0)
            if not self.xds.socket_path.exists():
                self.socket_recreated += 1
                log.error("xDS socket %s disappeared; re-creating it", self.xds.socket_path)
                await self.xds.stop(grace=0.5)
                await self.xds.start()

    async def envoy_stats(self) -> str:
        return await self.admin.stats() if self.admin is not None else "# envoy admin unavailable\n"

    def xds_problems(self) -> str:
        return "; ".join(f"{t.rsplit('.', 1)[-1]} v{s.nacked_version}: {s.last_nack}"
                         for t, s in self.ads.status.types.items() if s.last_nack)

    def readiness_reasons(self) -> list[str]:
        if self.envoy is None or self.envoy.pid is None:
            return ["data plane not running"]
        if not self.ads.status.fully_acked(self.snapshot_version):
            return ["configuration not yet accepted by the data plane"]
        return []

    def metric_families(self) -> list[MetricFamily]:
        acked = MetricFamily("ratls_xds_acked_version", "gauge", "version Envoy ACKed, per resource type")
        nacks = MetricFamily("ratls_xds_nacks_total", "counter", "NACKs from Envoy, per resource type")
        for t, st in sorted(self.ads.status.types.items()):
            short = t.rsplit(".", 1)[-1]
            acked.add(float(st.acked_version or 0), type=short)
            nacks.add(st.nacks, type=short)
        return [
            MetricFamily("ratls_xds_snapshot_version", "gauge", "latest published snapshot").add(self.version),
            MetricFamily("ratls_envoy_restarts_total", "counter", "Envoy restarts after a crash").add(
                self.envoy.restarts if self.envoy else 0),
            MetricFamily("ratls_xds_socket_recreated_total", "counter", "xDS socket re-created after removal").add(
                self.socket_recreated),
            acked, nacks,
        ]

    def status(self) -> dict[str, Any]:
        return {"xds": {t.rsplit(".", 1)[-1]: vars(s) for t, s in self.ads.status.types.items()},
                "xds_version": self.snapshot_version,
                "envoy": {"pid": self.envoy.pid if self.envoy else None,
                          "restarts": self.envoy.restarts if self.envoy else 0}}

    async def stop(self) -> None:
        if self.envoy is not None:
            await self.envoy.stop()
        if self.xds is not None:
            await self.xds.stop()
