"""ADS server on grpcio (asyncio) over a unix socket: state of the world, one snapshot for
all types, ACK/NACK tracked per stream and per type and surfaced through ``XdsStatus``."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from ..envoy_config import PUSH_ORDER
from .snapshot import Snapshot

log = logging.getLogger("ratls.gateway.xds")


@dataclass
class TypeStatus:
    sent_version: str | None = None
    acked_version: str | None = None
    nacked_version: str | None = None
    last_nack: str | None = None
    nacks: int = 0
    last_ack_time: float | None = None


@dataclass
class XdsStatus:
    """What Envoy accepted and rejected; read by health, metrics and tests."""

    types: dict[str, TypeStatus] = field(default_factory=dict)
    streams_opened: int = 0
    streams_active: int = 0

    def of(self, type_url: str) -> TypeStatus:
        return self.types.setdefault(type_url, TypeStatus())

    def forget_acks(self) -> None:
        for st in self.types.values():
            st.acked_version = None

    def fully_acked(self, version: str) -> bool:
        return all(self.of(t).acked_version == version for t in PUSH_ORDER)


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, initial: Snapshot | None = None) -> None:
        self._snapshot = initial
        self._changed = asyncio.Condition()
        self.status = XdsStatus()
        self._nonce = 0

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    async def set_snapshot(self, snapshot: Snapshot) -> None:
        async with self._changed:
            self._snapshot = snapshot
            self._changed.notify_all()
        log.info("xds snapshot %s published", snapshot.version)

    async def wait_acked(self, version: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status.fully_acked(version):
                return True
            await asyncio.sleep(0.05)
        return self.status.fully_acked(version)

    def _response(self, snapshot: Snapshot, type_url: str, names: list[str]) -> discovery_pb2.DiscoveryResponse:
        self._nonce += 1
        resources = []
        for message in snapshot.of_type(type_url, names):
            packed = any_pb2.Any()
            packed.Pack(message)
            resources.append(packed)
        return discovery_pb2.DiscoveryResponse(version_info=snapshot.version, resources=resources,
                                               type_url=type_url, nonce=str(self._nonce))

    async def StreamAggregatedResources(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        self.status.streams_opened += 1
        self.status.streams_active += 1
        subscribed: dict[str, list[str]] = {}
        sent: dict[str, tuple[str, str, list[str]]] = {}  # type -> (version, nonce, names) last sent
        pending: asyncio.Queue[str] = asyncio.Queue()

        async def read_requests() -> None:
            async for req in request_iterator:
                t = req.type_url
                last = sent.get(t)
                if req.response_nonce:
                    if last is None or req.response_nonce != last[1]:
                        continue  # reply to a superseded response
                    self._record_reply(t, last[0], req)
                subscribed[t] = list(req.resource_names)
                await pending.put(t)
            await pending.put("")  # Envoy closed the stream

        async def watch_snapshots() -> None:
            seen: list[str | None] = [None]
            while True:
                async with self._changed:
                    await self._changed.wait_for(
                        lambda: self._snapshot is not None and self._snapshot.version != seen[0])
                    seen[0] = self._snapshot.version if self._snapshot else None
                for t in PUSH_ORDER:
                    if t in subscribed:
                        await pending.put(t)

        reader = asyncio.create_task(read_requests())
        watcher = asyncio.create_task(watch_snapshots())
        try:
            while True:
                t = await pending.get()
                if not t:
                    break
                snap = self._snapshot
                if snap is None or t not in subscribed:
                    continue
                names = subscribed[t]
                last = sent.get(t)
                if last is not None and last[0] == snap.version and last[2] == names:
                    continue  # Envoy already has exactly this
                resp = self._response(snap, t, names)
                sent[t] = (snap.version, resp.nonce, names)
                self.status.of(t).sent_version = snap.version
                yield resp
        finally:
            reader.cancel()
            watcher.cancel()
            self.status.streams_active -= 1

    def _record_reply(self, type_url: str, version: str, req: discovery_pb2.DiscoveryRequest) -> None:
        st = self.status.of(type_url)
        if req.HasField("error_detail") and req.error_detail.code != 0:
            st.nacks += 1
            st.nacked_version = version
            st.last_nack = req.error_detail.message
            log.error("envoy NACKed %s version %s: %s", type_url.rsplit(".", 1)[-1], version, req.error_detail.message)
        else:
            st.acked_version = req.version_info
            st.last_ack_time = time.time()


class XdsServer:
    """The grpc.aio server bound to a unix socket only readable by this user."""

    def __init__(self, socket_path: Path, servicer: AdsServicer) -> None:
        self.socket_path = socket_path
        self.servicer = servicer
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        if self.socket_path.exists():
            self.socket_path.unlink()
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)])
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self.servicer, server)
        old = os.umask(0o177)  # the socket is created 0600: only this user (and Envoy as it) connect
        try:
            server.add_insecure_port(f"unix:{self.socket_path}")
            await server.start()
        finally:
            os.umask(old)
        self.socket_path.chmod(0o600)
        self._server = server

    async def stop(self, grace: float = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
