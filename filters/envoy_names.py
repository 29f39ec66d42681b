"""The names of the Envoy resources the control plane pushes, and of the routes in them: one
table for ``gateway/`` (which builds the listener, clusters and snapshot) and ``filters/``
(which compiles routes that point at those clusters). It lives in ``filters/`` because
``gateway/`` imports ``filters/`` and never the other way round (DESIGN.md §2).

Route names are for people (access logs, Envoy's stats); what a route *is* travels in its
metadata (``filters.route_facts``), never parsed back out of a name."""

from __future__ import annotations

# Resources of a snapshot.
LISTENER_NAME = "ratls_public"
ROUTE_CONFIG_NAME = "ratls_routes"
VIRTUAL_HOST_NAME = "ratls"
SECRET_NAME = "ratls_server_cert"  # noqa: S105 - a resource name
SECRET_TICKET_KEYS = "ratls_session_ticket_keys"  # noqa: S105 - a resource name

# Clusters. Both Triton ports have a second cluster of their own for streams: the same port,
# another upstream budget (circuit breaker).
CLUSTER_TRITON_HTTP = "triton_http"
CLUSTER_TRITON_GRPC = "triton_grpc"
CLUSTER_TRITON_GRPC_STREAM = "triton_grpc_stream"  # ModelStreamInfer
CLUSTER_TRITON_HTTP_STREAM = "triton_http_stream"  # generate_stream: streaming responses
CLUSTER_CONTROL = "ratls_control"  # the evidence API and /healthz
CLUSTER_REFLECTION = "ratls_reflection"
CLUSTER_XDS = "ratls_xds"  # static, in the bootstrap
CLUSTER_AUTHZ = "ratls_authz"  # only when client authentication is configured

# Routes every gateway has, before the compiled ones.
ROUTE_EVIDENCE = "ratls-evidence"
ROUTE_HEALTH = "ratls-health"
ROUTE_REFLECTION_V1 = "grpc-reflection-v1"
ROUTE_REFLECTION_V1ALPHA = "grpc-reflection-v1alpha"
CONTROL_ROUTES = (ROUTE_EVIDENCE, ROUTE_HEALTH, ROUTE_REFLECTION_V1, ROUTE_REFLECTION_V1ALPHA)
# Triton by protocol when no policy is compiled.
ROUTE_TRITON_GRPC = "triton-grpc"
ROUTE_TRITON_HTTP = "triton-http"
# Everything refused while the served models are not (known to be) the attested ones.
ROUTE_UPSTREAM_REFUSED = "upstream-refused"

# Prefixes and suffixes of compiled route names. A catalog route is named
# "<category>:<catalog name>"; its refusal variants add a suffix.
PREFIX_HYGIENE = "hygiene"
PREFIX_DENY = "deny"
SUFFIX_TOO_LARGE = "too-large"
SUFFIX_GRPC = "grpc"


def route_name(*parts: str) -> str:
    """A compiled route's name from its parts: ``route_name("deny", "query")`` is ``deny:query``."""
    return ":".join(parts)
