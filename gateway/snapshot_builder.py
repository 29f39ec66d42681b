"""The snapshot of everything Envoy gets, built from typed inputs by one pure function and
checked for consistency before it can be pushed: a route naming a missing cluster, or a
listener naming a missing route configuration or secret, is refused here, not NACKed (or
worse, accepted and warming forever) by Envoy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from filters.compile import FilterPlan, refusal_routes
from filters.envoy_names import ROUTE_UPSTREAM_REFUSED
from ratls.errors import ConfigError

from . import envoy_config as ec
from .identity import Identity
from .xds.snapshot import Snapshot

M = TypeVar("M", bound=Message)


class InconsistentSnapshot(ConfigError):
    """A snapshot whose resources refer to resources it does not hold: a bug, never pushed."""


@dataclass(frozen=True)
class SnapshotInputs:
    identity: Identity  # the certificate and key Envoy serves
    upstreams: ec.Upstreams  # where Triton and the control plane's sockets are
    listener: ec.ListenerOptions  # the public listener, with the compiled filters and routes
    plan: FilterPlan | None  # the compiled policy: its upstream budgets for the clusters
    refusal: str | None = None  # why nothing may reach Triton now (fail closed), or None
    # TLS session-ticket keys when the listener resumes sessions (never in a repr or a traceback)
    ticket_keys: tuple[bytes, ...] = field(default=(), repr=False)


def build_snapshot(version: str, inputs: SnapshotInputs) -> Snapshot:
    """Snapshot *version* of *inputs*; raises InconsistentSnapshot rather than return a broken one."""
    routes = None
    if inputs.refusal is not None:
        # Fail closed: nothing reaches Triton until the cause is gone.
        routes = refusal_routes(ROUTE_UPSTREAM_REFUSED, 503, inputs.refusal)
    plan = inputs.plan
    snapshot = Snapshot(version, {
        ec.TYPE_CLUSTER: {c.name: c for c in ec.clusters(
            inputs.upstreams, plan.cluster_extras if plan else None, plan.stream_cluster_extras if plan else None)},
        ec.TYPE_SECRET: {ec.SECRET_NAME: ec.secret(inputs.identity.cert_pem, inputs.identity.key_pem()),
                         **({ec.SECRET_TICKET_KEYS: ec.ticket_keys_secret(inputs.ticket_keys)}
                            if inputs.ticket_keys else {})},
        ec.TYPE_ROUTE: {ec.ROUTE_NAME: ec.route_configuration(inputs.listener, routes)},
        ec.TYPE_LISTENER: {ec.LISTENER_NAME: ec.listener(inputs.listener)},
    })
    check_snapshot(snapshot)
    return snapshot


def check_snapshot(snapshot: Snapshot) -> None:
    problems = snapshot_problems(snapshot)
    if problems:
        raise InconsistentSnapshot(f"snapshot {snapshot.version} is inconsistent: {'; '.join(problems)}",
                                   hint="a gateway bug: report it with this message")


def snapshot_problems(snapshot: Snapshot) -> list[str]:
    """Every reference between the snapshot's resources that does not resolve."""
    problems = [f"{_short(t)} {key!r} holds a resource named {message.name!r}"
                for t, by_name in snapshot.resources.items() for key, message in by_name.items()
                if message.name != key]
    problems += [f"no {_short(t)}" for t in ec.PUSH_ORDER if not snapshot.resources.get(t)]
    clusters = set(snapshot.resources.get(ec.TYPE_CLUSTER, {}))
    secrets = set(snapshot.resources.get(ec.TYPE_SECRET, {}))
    route_configs = set(snapshot.resources.get(ec.TYPE_ROUTE, {}))
    for name, config in snapshot.resources.get(ec.TYPE_ROUTE, {}).items():
        problems += [f"route {route.name!r} in {name!r} goes to the missing cluster {cluster!r}"
                     for vhost in config.virtual_hosts for route in vhost.routes
                     for cluster in _route_clusters(route) if cluster not in clusters]
    for name, listener in snapshot.resources.get(ec.TYPE_LISTENER, {}).items():
        problems += _listener_problems(name, listener, clusters, secrets, route_configs)
    return problems


def _listener_problems(name: str, listener: listener_pb2.Listener, clusters: set[str], secrets: set[str],
                       route_configs: set[str]) -> list[str]:
    problems = []
    for chain in listener.filter_chains:
        tls = _unpacked(chain.transport_socket.typed_config, tls_pb2.DownstreamTlsContext)
        if tls is not None:
            problems += [f"listener {name!r} serves the missing secret {sds.name!r}"
                         for sds in tls.common_tls_context.tls_certificate_sds_secret_configs
                         if sds.name not in secrets]
            tickets = tls.session_ticket_keys_sds_secret_config.name if tls.HasField(
                "session_ticket_keys_sds_secret_config") else ""
            if tickets and tickets not in secrets:
                problems.append(f"listener {name!r} resumes sessions with the missing secret {tickets!r}")
        for network_filter in chain.filters:
            hcm = _unpacked(network_filter.typed_config, http_connection_manager_pb2.HttpConnectionManager)
            if hcm is None:
                continue
            if hcm.HasField("rds") and hcm.rds.route_config_name not in route_configs:
                problems.append(f"listener {name!r} names the missing route configuration "
                                f"{hcm.rds.route_config_name!r}")
            for http_filter in hcm.http_filters:
                authz = _unpacked(http_filter.typed_config, ext_authz_pb2.ExtAuthz)
                cluster = authz.grpc_service.envoy_grpc.cluster_name if authz is not None else ""
                if cluster and cluster not in clusters:
                    problems.append(f"listener {name!r}: HTTP filter {http_filter.name!r} calls the missing "
                                    f"cluster {cluster!r}")
    return problems


def _unpacked(packed: any_pb2.Any, message_type: type[M]) -> M | None:
    message = message_type()
    return message if packed.Is(message.DESCRIPTOR) and packed.Unpack(message) else None


def _route_clusters(route: route_pb2.Route) -> list[str]:
    if route.WhichOneof("action") != "route":
        return []
    action = route.route
    named = [action.cluster] if action.WhichOneof("cluster_specifier") == "cluster" else []
    return named + [c.name for c in action.weighted_clusters.clusters]


def _short(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]
