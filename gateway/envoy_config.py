"""Envoy configuration: the bootstrap (which points only at our xDS socket) and the
resources of a snapshot (listener, routes, clusters, the SDS secret).

Resources are written as dicts in Envoy's JSON form and parsed into the xds-protos
messages, which validates every field name and type before anything reaches Envoy.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Importing these registers the message types used inside `typed_config` Any fields.
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401
from envoy.extensions.access_loggers.stream.v3 import stream_pb2  # noqa: F401
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2  # noqa: F401
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2  # noqa: F401
from envoy.extensions.filters.http.grpc_field_extraction.v3 import config_pb2 as grpc_field_extraction_pb2  # noqa: F401
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2  # noqa: F401
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.connection_limit.v3 import connection_limit_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format
from google.protobuf.message import Message

from filters.envoy_names import (
    CLUSTER_AUTHZ,
    CLUSTER_CONTROL,
    CLUSTER_REFLECTION,
    CLUSTER_TRITON_GRPC,
    CLUSTER_TRITON_GRPC_STREAM,
    CLUSTER_TRITON_HTTP,
    CLUSTER_TRITON_HTTP_STREAM,
    CLUSTER_XDS,
    LISTENER_NAME,
    ROUTE_CONFIG_NAME,
    ROUTE_EVIDENCE,
    ROUTE_HEALTH,
    ROUTE_REFLECTION_V1,
    ROUTE_REFLECTION_V1ALPHA,
    ROUTE_TRITON_GRPC,
    ROUTE_TRITON_HTTP,
    SECRET_NAME,
    SECRET_TICKET_KEYS,
    VIRTUAL_HOST_NAME,
)
from filters.route_facts import RouteKind, tagged

TYPE_CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
TYPE_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
TYPE_ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
TYPE_SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"  # noqa: S105 - a type URL
# Order in which a state-of-the-world push sends types: clusters before the listener that
# uses them, the secret and routes before the listener warms.
PUSH_ORDER = (TYPE_CLUSTER, TYPE_SECRET, TYPE_ROUTE, TYPE_LISTENER)
ROUTE_NAME = ROUTE_CONFIG_NAME  # the route configuration the listener names

WELL_KNOWN = "/.well-known/ratls/"
HEALTH_PATH = "/healthz"
CLIENT_HEADER = "x-ratls-client"
REFLECTION_PREFIXES = ("/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/")

_H2 = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}


@dataclass
class Upstreams:
    triton_host: str
    triton_http_port: int
    triton_grpc_port: int
    control_socket: Path
    reflection_socket: Path
    authz_socket: Path | None = None  # set when client authentication is configured


@dataclass
class ListenerOptions:
    address: str = "0.0.0.0"  # noqa: S104 - the public listener
    port: int = 8443
    tls_min_version: str = "1.3"
    # Extra HTTP filters (Envoy JSON) compiled by filters/, placed before the router.
    http_filters: list[dict[str, Any]] = field(default_factory=list)
    # Per-route additions from filters/ (typed_per_filter_config etc.), keyed by route name.
    route_extras: dict[str, dict[str, Any]] = field(default_factory=dict)
    hcm_extras: dict[str, Any] = field(default_factory=dict)
    extra_routes: list[dict[str, Any]] = field(default_factory=list)  # before the default catch-alls
    client_ca_pem: bytes | None = None  # mutual TLS: request (not require) client certificates
    pre_routes: list[dict[str, Any]] = field(default_factory=list)  # before everything (path hygiene)
    routes: list[dict[str, Any]] | None = None  # replaces the Triton catch-alls (compiled policy)
    network_filters: list[dict[str, Any]] = field(default_factory=list)  # before the HTTP connection manager
    filter_chain_extras: dict[str, Any] = field(default_factory=dict)
    listener_extras: dict[str, Any] = field(default_factory=dict)
    # TLS 1.3 resumption with the gateway's own ticket keys over SDS (gateway/session_tickets.py);
    # False: resumption off (every connection is a full handshake with the RA-TLS certificate).
    session_tickets: bool = False


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _cluster(name: str, address: dict[str, Any], *, h2: bool = False, timeout: str = "2s") -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": timeout,
        "load_assignment": {"cluster_name": name,
                            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]},
    }
    if h2:
        cluster["typed_extension_protocol_options"] = _H2
    return cluster


def clusters(up: Upstreams, triton_extras: dict[str, Any] | None = None,
             stream_extras: dict[str, Any] | None = None) -> list[cluster_pb2.Cluster]:
    specs = [
        _cluster(CLUSTER_TRITON_HTTP, _socket_address(up.triton_host, up.triton_http_port)),
        _cluster(CLUSTER_TRITON_GRPC, _socket_address(up.triton_host, up.triton_grpc_port), h2=True),
        _cluster(CLUSTER_TRITON_GRPC_STREAM, _socket_address(up.triton_host, up.triton_grpc_port), h2=True),
        _cluster(CLUSTER_TRITON_HTTP_STREAM, _socket_address(up.triton_host, up.triton_http_port)),
        _cluster(CLUSTER_CONTROL, {"pipe": {"path": str(up.control_socket)}}),
        _cluster(CLUSTER_REFLECTION, {"pipe": {"path": str(up.reflection_socket)}}, h2=True),
    ]
    if up.authz_socket is not None:
        specs.append(_cluster(CLUSTER_AUTHZ, {"pipe": {"path": str(up.authz_socket)}}, h2=True))
    for spec in specs:
        # Triton is an ordinary upstream; health is tracked by the control plane, not Envoy.
        spec["common_http_protocol_options"] = {"idle_timeout": "300s"}
        if spec["name"] in (CLUSTER_TRITON_HTTP, CLUSTER_TRITON_GRPC) and triton_extras:
            spec.update(triton_extras)
        if spec["name"] in (CLUSTER_TRITON_GRPC_STREAM, CLUSTER_TRITON_HTTP_STREAM) and stream_extras:
            spec.update(stream_extras)
    return [json_format.ParseDict(s, cluster_pb2.Cluster()) for s in specs]


def _grpc_match(prefix: str = "/") -> dict[str, Any]:
    return {"prefix": prefix, "headers": [{"name": "content-type", "string_match": {"prefix": "application/grpc"}}]}


def default_routes() -> list[dict[str, Any]]:
    """The routes every gateway has: evidence API, health, reflection, then Triton by protocol."""
    routes: list[dict[str, Any]] = [
        # The evidence API shares the hardware fairly per client address, which only Envoy knows.
        {"name": ROUTE_EVIDENCE, "match": {"prefix": WELL_KNOWN},
         "route": {"cluster": CLUSTER_CONTROL, "timeout": "30s"},
         "request_headers_to_add": [{"header": {"key": CLIENT_HEADER,
                                                "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
                                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]},
        {"name": ROUTE_HEALTH, "match": {"path": HEALTH_PATH},
         "route": {"cluster": CLUSTER_CONTROL, "timeout": "5s"}},
    ]
    for name, prefix in zip((ROUTE_REFLECTION_V1, ROUTE_REFLECTION_V1ALPHA), REFLECTION_PREFIXES, strict=True):
        routes.append({"name": name, "match": _grpc_match(prefix),
                       "route": {"cluster": CLUSTER_REFLECTION, "timeout": "0s"}})
    return [tagged(route, RouteKind.CONTROL) for route in routes]


def catch_all_routes() -> list[dict[str, Any]]:
    routes = [
        # Streams (ModelStreamInfer) must not be cut by a route timeout; idle streams are
        # bounded by the connection manager's stream_idle_timeout instead.
        {"name": ROUTE_TRITON_GRPC, "match": _grpc_match(),
         "route": {"cluster": CLUSTER_TRITON_GRPC, "timeout": "0s",
                   "max_stream_duration": {"max_stream_duration": "0s"}}},
        {"name": ROUTE_TRITON_HTTP, "match": {"prefix": "/"},
         "route": {"cluster": CLUSTER_TRITON_HTTP, "timeout": "300s"}},
    ]
    return [tagged(route, RouteKind.TRITON) for route in routes]


def route_configuration(options: ListenerOptions,
                        routes: list[dict[str, Any]] | None = None) -> route_pb2.RouteConfiguration:
    if routes is None:
        routes = options.routes if options.routes is not None else catch_all_routes()
    all_routes = list(options.pre_routes) + default_routes() + list(options.extra_routes) + list(routes)
    for route in all_routes:
        extra = options.route_extras.get(route.get("name", ""))
        if extra:
            route.update(extra)
    spec: dict[str, Any] = {"name": ROUTE_CONFIG_NAME,
                            "virtual_hosts": [{"name": VIRTUAL_HOST_NAME, "domains": ["*"], "routes": all_routes}]}
    return json_format.ParseDict(spec, route_pb2.RouteConfiguration())


def listener(options: ListenerOptions) -> listener_pb2.Listener:
    tls_version = {"1.2": "TLSv1_2", "1.3": "TLSv1_3"}[options.tls_min_version]
    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": "ratls",
        "codec_type": "AUTO",
        "rds": {"route_config_name": ROUTE_CONFIG_NAME, "config_source": {"ads": {}, "resource_api_version": "V3"}},
        "http_filters": [*options.http_filters, {
            "name": "envoy.filters.http.router",
            # no x-envoy-* response headers: they name the proxy and time the upstream for outsiders
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                             "suppress_envoy_headers": True},
        }],
        "stream_idle_timeout": "300s",
        "request_headers_timeout": "10s",
        "use_remote_address": True,
        "http2_protocol_options": {"max_concurrent_streams": 100},
    }
    hcm.update(options.hcm_extras)
    common_tls: dict[str, Any] = {
        "tls_params": {"tls_minimum_protocol_version": tls_version},
        "alpn_protocols": ["h2", "http/1.1"],
        "tls_certificate_sds_secret_configs": [
            {"name": SECRET_NAME, "sds_config": {"ads": {}, "resource_api_version": "V3"}}],
    }
    if options.client_ca_pem:
        common_tls["validation_context"] = {"trusted_ca": {"inline_bytes": base64.b64encode(
            options.client_ca_pem).decode()}}
    spec = {
        "name": LISTENER_NAME,
        "address": _socket_address(options.address, options.port),
        # Envoy's default SO_REUSEPORT lets a second gateway bind the same port and the kernel then
        # splits connections between two certificates; without it the second bind fails.
        "enable_reuse_port": False,
        **options.listener_extras,
        "filter_chains": [{
            **options.filter_chain_extras,
            "filters": [*options.network_filters,
                        {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}],
            "transport_socket": {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "common_tls_context": common_tls,
                    # Client certificates are requested, not required: verifying the gateway
                    # must stay possible without an account; ext_authz decides per request.
                    "require_client_certificate": False,
                    **_resumption(options.session_tickets),
                },
            },
        }],
    }
    return json_format.ParseDict(spec, listener_pb2.Listener())


def _resumption(session_tickets: bool) -> dict[str, Any]:
    if not session_tickets:
        return {"disable_stateless_session_resumption": True, "disable_stateful_session_resumption": True}
    # Tickets only (no server-side session cache): a resumed session needs the key that sealed it,
    # so dropping the key ends it. (session_timeout would not: BoringSSL gives TLS 1.3 tickets its
    # own two-day PSK lifetime; the key rotation is what bounds a session's age.)
    return {"session_ticket_keys_sds_secret_config": {"name": SECRET_TICKET_KEYS,
                                                      "sds_config": {"ads": {}, "resource_api_version": "V3"}},
            "disable_stateful_session_resumption": True}


def ticket_keys_secret(keys: tuple[bytes, ...]) -> secret_pb2.Secret:
    """Session-ticket keys, first one sealing: like the private key, only over the 0600 xDS socket."""
    return secret_pb2.Secret(name=SECRET_TICKET_KEYS, session_ticket_keys=common_pb2.TlsSessionTicketKeys(
        keys=[base_pb2.DataSource(inline_bytes=k) for k in keys]))


def secret(cert_pem: bytes, key_pem: bytes) -> secret_pb2.Secret:
    # The private key travels only over the 0600 xDS unix socket inside the TEE.
    return secret_pb2.Secret(
        name=SECRET_NAME,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=cert_pem),
            private_key=base_pb2.DataSource(inline_bytes=key_pem),
        ),
    )


DEFAULT_OVERLOAD = {"resource_monitors": [{
    "name": "envoy.resource_monitors.global_downstream_max_connections",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
                 "DownstreamConnectionsConfig",
        "max_active_downstream_connections": 10000}}]}


def bootstrap(xds_socket: Path, admin_socket: Path, node_id: str = "ratls-gateway",
              overload: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = {
        "node": {"id": node_id, "cluster": "ratls-gateway"},
        "admin": {"address": {"pipe": {"path": str(admin_socket), "mode": 0o600}}},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3", "set_node_on_first_message_only": True,
                           "grpc_services": [{"envoy_grpc": {"cluster_name": CLUSTER_XDS}}]},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {"clusters": [_cluster(CLUSTER_XDS, {"pipe": {"path": str(xds_socket)}}, h2=True,
                                                   timeout="1s")]},
        # Route regexes list the allowed model names; RE2's default program-size cap (100) is
        # too small for more than a couple of models.
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {
            "re2.max_program_size.error_level": 100000, "re2.max_program_size.warn_level": 100000,
            # RFC 8879: the certificate goes out compressed (brotli, or zlib) to clients that offer
            # it, so a TDX certificate with its collateral fits a first flight. Off by default in
            # this Envoy; a reloadable feature can vanish in a later release, so the e2e relay
            # test (test_the_certificate_goes_out_compressed_...) is what catches a regression.
            "envoy.reloadable_features.tls_certificate_compression_brotli": True}}]},
        "overload_manager": overload or DEFAULT_OVERLOAD,
    }
    from envoy.config.bootstrap.v3 import bootstrap_pb2
    from envoy.extensions.resource_monitors.downstream_connections.v3 import (  # noqa: F401
        downstream_connections_pb2,
    )
    from envoy.extensions.resource_monitors.fixed_heap.v3 import fixed_heap_pb2  # noqa: F401
    json_format.ParseDict(spec, bootstrap_pb2.Bootstrap())  # validate before Envoy sees it
    return spec


def write_bootstrap(path: Path, spec: dict[str, Any]) -> None:
    path.write_text(json.dumps(spec, indent=2))
    path.chmod(0o600)


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)
