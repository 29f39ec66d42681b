"""Compile a FilterPolicy into Envoy's native HTTP filters and routes, from the API catalog
only (no Triton path is written here). No request pays a Python hop: everything below runs
inside Envoy (buffer, header mutation, local rate limit, gRPC field extraction, RBAC)."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any

from triton_backend.catalog import (
    GRPC_METHODS,
    HTTP_ROUTES,
    REGION,
    Category,
    GrpcMethod,
    HttpRoute,
    expand_template,
)

from .envoy_names import (
    CLUSTER_AUTHZ,
    CLUSTER_TRITON_GRPC,
    CLUSTER_TRITON_GRPC_STREAM,
    CLUSTER_TRITON_HTTP,
    CLUSTER_TRITON_HTTP_STREAM,
    CONTROL_ROUTES,
    PREFIX_DENY,
    PREFIX_HYGIENE,
    SUFFIX_GRPC,
    SUFFIX_TOO_LARGE,
    route_name,
)
from .policy import FilterPolicy, Limits
from .route_facts import RouteKind, category_of, kind_of, tagged

FIELD_NS = "envoy.filters.http.grpc_field_extraction"
_GRPC_CT = {"name": "content-type", "string_match": {"prefix": "application/grpc"}}
JSON_CT = [{"header": {"key": "content-type", "value": "application/json"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]


@dataclass
class FilterPlan:
    http_filters: list[dict[str, Any]] = field(default_factory=list)
    pre_routes: list[dict[str, Any]] = field(default_factory=list)  # before the evidence API routes
    routes: list[dict[str, Any]] | None = None  # replaces the default Triton catch-alls
    hcm_extras: dict[str, Any] = field(default_factory=dict)
    network_filters: list[dict[str, Any]] = field(default_factory=list)
    cluster_extras: dict[str, Any] = field(default_factory=dict)
    route_extras: dict[str, dict[str, Any]] = field(default_factory=dict)
    stream_cluster_extras: dict[str, Any] = field(default_factory=dict)  # the ModelStreamInfer cluster
    filter_chain_extras: dict[str, Any] = field(default_factory=dict)
    listener_extras: dict[str, Any] = field(default_factory=dict)
    overload_manager: dict[str, Any] = field(default_factory=dict)  # bootstrap section
    auth: Any = None  # the AuthPolicy when client authentication is on


def _deny(*parts: str) -> str:
    return route_name(PREFIX_DENY, *parts)


def _hygiene(name: str) -> str:
    return route_name(PREFIX_HYGIENE, name)


def duration(seconds: float) -> str:
    """Envoy's duration syntax, never in exponent form (1e+06s is not a duration)."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def _local_reply(name: str, status: int, message: str, match: dict[str, Any], *,
                 buffered: bool = False, category: Category | None = None) -> dict[str, Any]:
    body = json.dumps({"error": message}, separators=(",", ":")) + "\n"
    route = {"name": name, "match": match, "direct_response": {"status": status, "body": {"inline_string": body}},
             "response_headers_to_add": JSON_CT}
    if not buffered:
        route["typed_per_filter_config"] = _no_buffer()
    return tagged(route, RouteKind.REFUSAL, category)


def _grpc_refusal(name: str, status: int, message: str, match: dict[str, Any], *,
                  category: Category | None = None) -> dict[str, Any]:
    """A gRPC request refused by Envoy: the HTTP status becomes the grpc-status (403 ->
    PERMISSION_DENIED, 404 -> UNIMPLEMENTED), the body its grpc-message."""
    return tagged({"name": name, "match": match, "direct_response": {"status": status, "body": {
        "inline_string": f"ratls-gateway: {message}"}}, "typed_per_filter_config": _no_buffer()},
        RouteKind.REFUSAL, category)


def refusal_routes(name: str, status: int, message: str) -> list[dict[str, Any]]:
    """Every request refused alike, in each protocol's own shape: gRPC callers get a grpc-status
    and grpc-message, everyone else Triton's JSON error shape (tritonclient parses the body)."""
    # HTTP is answered after the (bounded) body is read: a reply while an HTTP/2 client still
    # uploads ends in a stream reset, which curl reports as a framing error instead of the status.
    # gRPC clients take an early trailers-only reply, and a stream has no end to wait for.
    grpc = _grpc_refusal(route_name(name, SUFFIX_GRPC), status, message, {"prefix": "/", "headers": [_GRPC_CT]})
    return [grpc, _local_reply(name, status, message, {"prefix": "/"}, buffered=True)]


def _path_contains(text: str) -> dict[str, Any]:
    return {"prefix": "/", "headers": [{"name": ":path", "string_match": {"contains": text}}]}


def hygiene_routes() -> list[dict[str, Any]]:
    """Raw-path tricks are refused before any routing decision (Envoy does not normalise)."""
    return [
        _local_reply(_hygiene("percent"), 400, "percent-encoded paths are refused", _path_contains("%")),
        _local_reply(_hygiene("dotdot"), 400, "'..' in paths is refused", _path_contains("..")),
        _local_reply(_hygiene("double-slash"), 400, "'//' in paths is refused", _path_contains("//")),
        _local_reply(_hygiene("backslash"), 400, "'\\\\' in paths is refused", _path_contains("\\")),
    ]


def _model_alternation(policy: FilterPolicy, with_versions: bool) -> str | None:
    models = policy.models or {}
    if not models:
        return None
    parts = []
    for name, versions in sorted(models.items()):
        if not with_versions:
            parts.append(re.escape(name))
        elif versions:
            # Pinned versions must be named: Triton resolves an unversioned path to the model's
            # default version, which need not be a pinned one.
            parts.append(re.escape(name) + "/versions/(?:" + "|".join(versions) + ")")
        else:
            parts.append(re.escape(name) + "(?:/versions/[0-9]{1,19})?")
    return "(?:" + "|".join(parts) + ")"


def http_route_regex(route: HttpRoute, policy: FilterPolicy) -> str | None:
    """The route's raw-path regex, restricted to the allowed models (None: no model allowed)."""
    if not route.per_model:  # fixed paths, and the shared-memory routes named by region
        return "^" + expand_template(route.template, model="", region=REGION) + "$"
    alternation = _model_alternation(policy, route.versioned)
    if alternation is None:
        return None
    # the alternation names each model with the versions it may be called by
    return "^" + expand_template(route.template, model=alternation, versioned_model=alternation, region=REGION) + "$"


def _method_match(methods: tuple[str, ...]) -> dict[str, Any]:
    if len(methods) == 1:
        return {"name": ":method", "string_match": {"exact": methods[0]}}
    return {"name": ":method", "string_match": {"safe_regex": {"regex": "^(?:" + "|".join(methods) + ")$"}}}


def _buffer(limit: int) -> dict[str, Any]:
    # Buffering the whole request makes Envoy send it upstream with Content-Length, never
    # chunked (pre-2.62 Triton overflowed its stack on many chunks) and enforces the size (413).
    return {"envoy.filters.http.buffer": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
        "buffer": {"max_request_bytes": limit}}}


def _no_buffer() -> dict[str, Any]:
    # A fresh dict each time: per-route configs are amended later (e.g. ext_authz exemptions),
    # and a shared one would leak an exemption onto every route that uses it.
    return {"envoy.filters.http.buffer": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute", "disabled": True}}


def _request_limit(policy: FilterPolicy, category: Category) -> int:
    return policy.limits.max_request_bytes_by_category.get(category.value, policy.limits.max_request_bytes)


def _path_match(route: HttpRoute, regex: str) -> dict[str, Any]:
    # A template without placeholders is an exact path: a string compare instead of an RE2 run.
    if "{" not in route.template:
        return {"path": route.template}
    return {"safe_regex": {"regex": regex}}


def _hot_first(route: HttpRoute) -> int:
    # Envoy tries routes in order; inference is the hot path, so it is tried first. Allowed route
    # patterns are anchored and literal apart from the allowed model names, so no two can match
    # the same path and the order changes cost, not meaning (tests check the disjointness).
    return 0 if route.category == Category.INFERENCE else 1


def _no_stream_cap() -> dict[str, Any]:
    # Streaming responses (generate_stream, Watch, ModelStreamInfer) are not cut by the
    # connection manager's max_stream_duration; idle streams still end at stream_idle_timeout.
    return {"max_stream_duration": {"max_stream_duration": "0s"}}


def allowed_http_routes(policy: FilterPolicy) -> list[dict[str, Any]]:
    routes = []
    for route in sorted(HTTP_ROUTES, key=_hot_first):
        if not policy.allowed(route.category):
            continue
        regex = http_route_regex(route, policy)
        if regex is None:
            continue
        name = route_name(route.category.value, route.name)
        limit = _request_limit(policy, route.category)
        action = {"cluster": CLUSTER_TRITON_HTTP_STREAM if route.streaming else CLUSTER_TRITON_HTTP,
                  "timeout": "0s" if route.streaming else duration(policy.limits.request_timeout_s),
                  "idle_timeout": duration(policy.limits.stream_idle_timeout_s),
                  **(_no_stream_cap() if route.streaming else {})}
        method = _method_match(route.methods)
        # Every body is buffered whole before Triton sees a byte: Triton gets Content-Length,
        # never chunks (pre-2.62 Triton overflowed its stack on many chunks), and a client that
        # trickles its body holds no upstream connection (the circuit breaker stays free for
        # everyone else). The first route is the common case (one regex run).
        routes.append(tagged({"name": name, "match": {**_path_match(route, regex), "headers": [method, {
            "name": "content-length", "range_match": {"start": 0, "end": limit + 1}}]}, "route": dict(action),
            "typed_per_filter_config": _buffer(limit)}, RouteKind.TRITON, route.category))
        # A declared Content-Length over the limit is refused before any body byte is read.
        routes.append(_local_reply(route_name(name, SUFFIX_TOO_LARGE), 413, f"request body larger than {limit} bytes",
                                   {**_path_match(route, regex), "headers": [method, {
                                       "name": "content-length", "present_match": True}]}, category=route.category))
        # No Content-Length (chunked, or HTTP/2 without it): buffered up to the smaller chunked
        # limit (413 above it), then forwarded with Content-Length.
        routes.append(tagged({"name": name, "match": {**_path_match(route, regex), "headers": [method]},
                              "route": dict(action), "typed_per_filter_config": _buffer(
                                  min(limit, policy.limits.max_chunked_request_bytes))},
                             RouteKind.TRITON, route.category))
    return routes


def model_fields(method: GrpcMethod) -> tuple[str, str]:
    """The request-message fields naming the model and its version, read from Triton's descriptors."""
    from google.protobuf import descriptor_pool

    from triton_backend.descriptors import file_descriptor_set

    pool = descriptor_pool.DescriptorPool()
    for f in file_descriptor_set().file:
        pool.Add(f)
    service = pool.FindServiceByName(method.service)
    fields = service.methods_by_name[method.method].input_type.fields_by_name
    name = "model_name" if "model_name" in fields else "name"
    version = "model_version" if "model_version" in fields else "version"
    if name not in fields:
        raise ValueError(f"{method.path}: request has no model name field")
    return name, version


def _dyn(matcher: dict[str, Any]) -> dict[str, Any]:
    return {"sourced_metadata": {"metadata_matcher": matcher, "metadata_source": "DYNAMIC"}}


def _rbac_models(method: GrpcMethod, policy: FilterPolicy) -> dict[str, Any]:
    """Per-route RBAC: allow only if the model named in the request message is allowed."""
    field_name, version_field = model_fields(method)
    principals = []
    for name, versions in sorted((policy.models or {}).items()):
        model_match = _dyn({"filter": FIELD_NS, "path": [{"key": field_name}],
                            "value": {"list_match": {"one_of": {"string_match": {"exact": name}}}}})
        if not versions:
            principals.append(model_match)
            continue
        allowed_versions = [_dyn({"filter": FIELD_NS, "path": [{"key": version_field}],
                                 "value": {"list_match": {"one_of": {"string_match": {"exact": v}}}}})
                            for v in versions]
        # as for HTTP: a pinned version must be named in the request
        principals.append({"and_ids": {"ids": [model_match, {"or_ids": {"ids": allowed_versions}}]}})
    rules: dict[str, Any] = {"action": "ALLOW", "policies": {}}
    if principals:
        rules["policies"]["allowed-models"] = {"permissions": [{"any": True}],
                                               "principals": [{"or_ids": {"ids": principals}}]}
    return {"envoy.filters.http.rbac": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
        "rbac": {"rules": rules}}}


GRPC_FRAME_HEADER = 5  # compressed flag + 4-byte length before every gRPC message


def grpc_routes(policy: FilterPolicy, per_model: bool = True) -> list[dict[str, Any]]:
    routes = []
    lim = policy.limits
    for method in GRPC_METHODS:
        match = {"path": method.path, "headers": [_GRPC_CT]}
        if not policy.allowed(method.category):
            # Catalogued but not exposed: refused here (PERMISSION_DENIED), Triton never sees it.
            routes.append(_grpc_refusal(_deny(method.method), 403,
                                        f"{method.method} is not exposed by the gateway policy", match,
                                        category=method.category))
            continue
        streaming = method.client_streaming or method.server_streaming
        action: dict[str, Any] = {"cluster": CLUSTER_TRITON_GRPC_STREAM if method.client_streaming
                                  else CLUSTER_TRITON_GRPC,
                                  "timeout": "0s" if streaming else duration(lim.request_timeout_s),
                                  "idle_timeout": duration(lim.stream_idle_timeout_s),
                                  **(_no_stream_cap() if streaming else {})}
        entry = tagged({"name": route_name(method.category.value, method.method), "match": match, "route": action},
                       RouteKind.TRITON, method.category)
        # A unary call carries one message: buffering it enforces grpc_max_message_bytes and, as
        # for HTTP, opens the upstream stream only once the request is complete. A client stream
        # (ModelStreamInfer) cannot be buffered; it goes to its own upstream budget instead.
        body = _no_buffer() if method.client_streaming else _buffer(lim.grpc_max_message_bytes + GRPC_FRAME_HEADER)
        rbac = _rbac_models(method, policy) if method.per_model and per_model else {}
        entry["typed_per_filter_config"] = {**body, **rbac}
        routes.append(entry)
    return routes


def compression_routes() -> list[dict[str, Any]]:
    """Compressed request bodies are refused: Triton inflates gzip/deflate bodies (HTTP) and
    messages (gRPC) without a limit, so the size limits would apply to the compressed bytes."""
    def not_identity(header: str) -> list[dict[str, Any]]:
        return [{"name": header, "present_match": True},
                {"name": header, "string_match": {"exact": "identity"}, "invert_match": True}]

    grpc = _grpc_refusal(_deny("grpc-compressed"), 404, "compressed gRPC messages are refused; send them "
                         "uncompressed (grpc-encoding: identity)",
                         {"prefix": "/", "headers": [_GRPC_CT, *not_identity("grpc-encoding")]})
    http = _local_reply(_deny("compressed"), 415, "compressed request bodies are refused; send the body uncompressed",
                        {"prefix": "/", "headers": not_identity("content-encoding")})
    return [grpc, http]


def shadow_deny_routes(policy: FilterPolicy) -> list[dict[str, Any]]:
    """Exact-path refusals for allowed-route paths that Triton reads as a denied API.

    A served model named like one of Triton's own path segments makes an allowed pattern match
    a path Triton dispatches elsewhere (a model named ``stats``: ``GET /v2/models/stats`` is
    Triton's all-models statistics, not that model's metadata). Such paths are refused before
    the allowed routes so the deny wins; the model stays reachable by its versioned path."""
    from triton_backend.catalog import classify_http

    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for route in HTTP_ROUTES:
        if not policy.allowed(route.category) or not route.per_model:
            continue
        for model in sorted(policy.models or {}):
            path = expand_template(route.template, model=model, version="", literal=str)
            for method in route.methods:
                reading = classify_http(method, path)
                if reading is None or reading[0] == route or policy.allowed(reading[0].category):
                    continue
                if (method, path) in seen:
                    continue
                seen.add((method, path))
                out.append(_local_reply(_deny("shadowed", reading[0].name), 403,
                                        f"the Triton {reading[0].category.value} API is not exposed by the gateway "
                                        f"policy (model {model!r}: use /v2/models/{model}/versions/<n>)",
                                        {"path": path, "headers": [_method_match((method,))]},
                                        category=reading[0].category))
    return out


def deny_query_route() -> dict[str, Any]:
    return _local_reply(_deny("query"), 400, "query strings are not accepted on Triton routes", _path_contains("?"))


def deny_routes() -> list[dict[str, Any]]:
    # any name in place of a placeholder: the API is refused whatever it is asked about
    denied = [(route, "^" + expand_template(route.template, model="[^/]+", version="(?:/versions/[^/]+)?",
                                            region="[^/]+") + "$") for route in HTTP_ROUTES]
    out = [_grpc_refusal(_deny("grpc-unknown"), 404, "unknown gRPC method", {"prefix": "/", "headers": [_GRPC_CT]})]
    for route, regex in denied:
        if route.category in (Category.HEALTH, Category.METADATA, Category.INFERENCE):
            continue  # unknown model on an allowed route: plain 404 below, revealing nothing
        out.append(_local_reply(_deny(route.name), 403, f"the Triton {route.category.value} API is not exposed "
                                "by the gateway policy", {"safe_regex": {"regex": regex}}, category=route.category))
    out.append(_local_reply(_deny("not-found"), 404, "not found", {"prefix": "/"}))
    return out


def _field_extraction(policy: FilterPolicy) -> dict[str, Any]:
    from triton_backend.descriptors import protoset_bytes

    extractions = {}
    for method in GRPC_METHODS:
        if method.per_model and policy.allowed(method.category):
            name, version = model_fields(method)
            extractions[f"{method.service}.{method.method}"] = {"request_field_extractions": {name: {}, version: {}}}
    return {"name": "envoy.filters.http.grpc_field_extraction", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_field_extraction.v3."
                 "GrpcFieldExtractionConfig",
        "descriptor_set": {"inline_bytes": base64.b64encode(protoset_bytes()).decode()},
        "extractions_by_method": extractions}}


def _token_bucket(rate: float, burst: int) -> dict[str, Any]:
    # Envoy refills whole tokens per interval: express the rate as tokens per 1 s (or per
    # longer interval for rates below 1/s).
    if rate >= 1:
        return {"max_tokens": burst, "tokens_per_fill": max(1, int(rate)), "fill_interval": "1s"}
    return {"max_tokens": burst, "tokens_per_fill": 1, "fill_interval": duration(1 / rate)}


def needs_grpc_model_check(policy: FilterPolicy, served: list[str] | None) -> bool:
    """gRPC names the model inside the protobuf body, so checking it costs a parse per request.
    When the allow-list is exactly the attested, fixed set of served models (Triton runs without
    model control, so no other model can appear) Triton itself refuses every other name and the
    check is redundant; it is compiled in whenever the allow-list is narrower or pins versions."""
    if policy.models is None or served is None:
        return True
    return set(policy.models) != set(served) or any(policy.models.values())


def _circuit_breaker(limit: int) -> dict[str, Any]:
    return {"circuit_breakers": {"thresholds": [{"max_requests": limit, "max_pending_requests": limit,
                                                 "max_connections": limit}]}}


# Locally generated upstream failures and overload replies: a Triton-shaped JSON error, without
# Envoy's internal reset reasons (which name internal addresses and states).
_UPSTREAM_FLAGS = ["UH", "UF", "UO", "URX", "UC", "UR", "UT", "OM", "DO", "NC"]


def local_reply_config() -> dict[str, Any]:
    is_grpc = {"header_filter": {"header": _GRPC_CT}}
    # A missing content-type (tritonclient's HTTP infer sends none) must count as "not gRPC".
    not_grpc = {"header_filter": {"header": {**_GRPC_CT, "invert_match": True, "treat_missing_header_as_empty": True}}}

    def mapper(flags: list[str], message: str) -> dict[str, Any]:
        return {"filter": {"and_filter": {"filters": [{"response_flag_filter": {"flags": flags}}, not_grpc]}},
                "body_format_override": {"json_format": {"error": message},
                                         "content_type": "application/json"}}
    too_large = {"status_code_filter": {"comparison": {"op": "EQ", "value": {
        "default_value": 413, "runtime_key": "ratls.local_reply.too_large"}}}}
    return {"mappers": [
        mapper(_UPSTREAM_FLAGS, "the model server is unavailable or overloaded; retry later"),
        mapper(["RL"], "rate limited; retry later"),
        # A unary gRPC message over grpc_max_message_bytes: RESOURCE_EXHAUSTED, as gRPC itself says.
        {"filter": {"and_filter": {"filters": [too_large, is_grpc]}},
         "headers_to_add": [{"header": {"key": "grpc-status", "value": "8"},
                             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
         "body": {"inline_string": "request message larger than the gateway's grpc_max_message_bytes"}},
    ]}


def overload_manager(lim: Any) -> dict[str, Any]:
    """Envoy's overload manager sized from the attested limits: the heap is bounded (the
    streams holding the most buffered bytes are reset first, so one client's never-ending
    bodies cannot exhaust the VM while small requests keep working) and so are connections."""
    def threshold(value: float) -> dict[str, Any]:
        return {"name": "envoy.resource_monitors.fixed_heap", "threshold": {"value": value}}

    manager = {
        "refresh_interval": "0.1s",
        "resource_monitors": [
            {"name": "envoy.resource_monitors.fixed_heap", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                "max_heap_size_bytes": lim.max_heap_bytes}},
            {"name": "envoy.resource_monitors.global_downstream_max_connections", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
                         "DownstreamConnectionsConfig",
                "max_active_downstream_connections": lim.max_connections}},
        ],
        "actions": [
            # HTTP/2 and gRPC: the streams holding the most buffered bytes are reset first.
            {"name": "envoy.overload_actions.reset_high_memory_stream", "triggers": [{
                "name": "envoy.resource_monitors.fixed_heap",
                "scaled": {"scaling_threshold": 0.70, "saturation_threshold": 0.85}}]},
            {"name": "envoy.overload_actions.shrink_heap", "triggers": [threshold(0.90)]},
            {"name": "envoy.overload_actions.stop_accepting_requests", "triggers": [threshold(0.995)]},
        ],
        # HTTP/1.1 streams are not memory-accounted: under pressure the connections still
        # sending request bytes are closed (a small request is done sending almost at once).
        "loadshed_points": [{"name": "envoy.load_shed_points.http1_server_abort_dispatch",
                             "triggers": [threshold(0.95)]}],
        # Streams are tracked (and so can be reset) once they hold 1 MiB of buffers.
        "buffer_factory_config": {"minimum_account_to_track_power_of_two": 20},
    }
    return manager


def server_metadata_route(policy: FilterPolicy, metadata: dict[str, Any]) -> dict[str, Any]:
    """``GET /v2`` answered by Envoy from Triton's own answer, minus the extensions of denied
    categories (a client learns nothing about APIs it cannot call)."""
    import json

    from triton_backend.catalog import EXTENSION_CATEGORY

    shown = [ext for ext in metadata.get("extensions", [])
             if ext not in EXTENSION_CATEGORY or policy.allowed(EXTENSION_CATEGORY[ext])]
    body = json.dumps({"name": metadata.get("name", "triton"), "version": metadata.get("version", ""),
                       "extensions": shown}, separators=(",", ":"))
    route = next(r for r in HTTP_ROUTES if r.name == "server-metadata")
    return tagged({"name": route_name(route.category.value, route.name),
                   "match": {"path": route.template, "headers": [_method_match(route.methods)]},
                   "direct_response": {"status": 200, "body": {"inline_string": body}},
                   "response_headers_to_add": JSON_CT, "typed_per_filter_config": _no_buffer()},
                  RouteKind.ANSWER, route.category)


def compile_policy(policy: FilterPolicy, *, access_log_path: str | None,
                   served_models: list[str] | None = None,
                   server_metadata: dict[str, Any] | None = None) -> FilterPlan:
    plan = FilterPlan()
    _connection_limits(plan, policy, access_log_path)
    if not policy.enabled:
        plan.pre_routes = compression_routes()  # Triton's unbounded inflation is never acceptable
        return plan  # filters off: Triton catch-alls, only the connection-level limits above
    grpc_check = needs_grpc_model_check(policy, served_models)
    auth = policy.auth if policy.auth is not None and policy.auth.enabled else None
    plan.http_filters = _http_filters(policy, grpc_check, auth is not None)
    no_authz = {"envoy.filters.http.ext_authz": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "disabled": True}} if auth is not None else {}
    # The evidence API, health and reflection stay open: verifying the gateway needs no account.
    # The control plane's routes take no bodies worth buffering (the buffer would hold up to
    # max_request_bytes per stream for nothing).
    plan.route_extras = {name: {"typed_per_filter_config": {**_no_buffer(), **no_authz}} for name in CONTROL_ROUTES}
    plan.auth = auth
    plan.pre_routes = hygiene_routes()
    plan.routes = _policy_routes(policy, grpc_check, server_metadata)
    if auth is not None:
        for route in plan.pre_routes:
            route.setdefault("typed_per_filter_config", {}).update(no_authz)
        for route in plan.routes:
            # Refusals need no account; GET /v2 (answered by Envoy) is metadata like any other.
            if kind_of(route) is RouteKind.REFUSAL or category_of(route) in auth.exempt_categories:
                route.setdefault("typed_per_filter_config", {}).update(no_authz)
    return plan


def _connection_limits(plan: FilterPlan, policy: FilterPolicy, access_log_path: str | None) -> None:
    """What applies with filters on or off: the connection manager's limits and timeouts, the
    connection cap, the heap cap and the upstream budgets."""
    lim = policy.limits
    plan.hcm_extras = _hcm_extras(policy)
    if access_log_path:
        plan.hcm_extras["access_log"] = [access_log(access_log_path)]
    plan.network_filters = [{"name": "envoy.filters.network.connection_limit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
        "stat_prefix": "ratls", "max_connections": lim.max_connections}}]
    # A connection that never completes its handshake is closed (the header timeout only
    # starts at the first request byte).
    plan.filter_chain_extras = {"transport_socket_connect_timeout": duration(lim.tls_handshake_timeout_s)}
    # Envoy's default, stated: the gRPC field extraction needs a stream's whole first message
    # within it (unary calls are buffered whole before it, below).
    plan.listener_extras = {"per_connection_buffer_limit_bytes": 2**20}
    plan.overload_manager = overload_manager(lim)
    plan.cluster_extras = _circuit_breaker(lim.upstream_max_requests)
    plan.stream_cluster_extras = _circuit_breaker(lim.upstream_max_streams)


def _hcm_extras(policy: FilterPolicy) -> dict[str, Any]:
    lim = policy.limits
    return {
        "normalize_path": False,
        "merge_slashes": False,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "request_headers_timeout": duration(lim.request_headers_timeout_s),
        "stream_idle_timeout": duration(lim.stream_idle_timeout_s),
        "max_request_headers_kb": lim.max_request_headers_kb,
        "server_name": "ratls-gateway",
        "common_http_protocol_options": {"idle_timeout": duration(lim.idle_timeout_s),
                                         "max_headers_count": lim.max_headers_count,
                                         # the whole exchange, body upload included (streams opt out)
                                         "max_stream_duration": duration(lim.request_timeout_s),
                                         "headers_with_underscores_action": "REJECT_REQUEST"},
        # Envoy's edge defaults: small windows, so a client cannot park megabytes per stream.
        "http2_protocol_options": {"max_concurrent_streams": lim.max_concurrent_streams,
                                   "initial_stream_window_size": 65536,
                                   "initial_connection_window_size": 1048576},
        "local_reply_config": local_reply_config(),
    }


def _http_filters(policy: FilterPolicy, grpc_check: bool, authenticate: bool) -> list[dict[str, Any]]:
    filters: list[dict[str, Any]] = [{"name": "envoy.filters.http.header_mutation", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {"request_mutations":
                      [{"remove": h} for h in sorted(policy.strip_headers)] +
                      [{"remove_on_match": {"key_matcher": {"prefix": p}}}
                       for p in sorted(policy.strip_header_prefixes)]},
    }}]
    rate_limit = _rate_limit_filter(policy.limits)
    if rate_limit is not None:
        filters.append(rate_limit)
    # The buffer comes before the field extraction: that then reads a unary call's message from
    # the whole buffered body, not from the 1 MiB connection buffer. (An unauthenticated client
    # can so make Envoy buffer a body before ext_authz refuses it: bounded by the heap cap.)
    filters.append({"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": policy.limits.max_request_bytes}})
    if grpc_check or authenticate:
        filters.append(_field_extraction(policy))  # the model a gRPC request names, for RBAC and authz
    if grpc_check:
        filters.append({"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}})
    if authenticate:
        filters.append({"name": "envoy.filters.http.ext_authz", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": CLUSTER_AUTHZ}, "timeout": "2s"},
            "failure_mode_allow": False,
            "include_peer_certificate": True,
            "metadata_context_namespaces": [FIELD_NS],
        }})
    return filters


def _rate_limit_filter(lim: Limits) -> dict[str, Any] | None:
    if not (lim.rate_limit or lim.per_client_rate_limit):
        return None
    rl: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "ratls_rate_limit",
        "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "rate_limited_as_resource_exhausted": True,
        # Both buckets apply: the per-client one does not exempt a request from the listener's.
        "always_consume_default_token_bucket": True,
    }
    if lim.rate_limit:
        rl["token_bucket"] = _token_bucket(lim.rate_limit.requests_per_second, lim.rate_limit.burst)
    if lim.per_client_rate_limit:
        rl["descriptors"] = [{"entries": [{"key": "remote_address", "value": ""}],
                              "token_bucket": _token_bucket(lim.per_client_rate_limit.requests_per_second,
                                                            lim.per_client_rate_limit.burst)}]
        rl["max_dynamic_descriptors"] = 10000
        rl["rate_limits"] = [{"actions": [{"remote_address": {}}]}]
    return {"name": "envoy.filters.http.local_ratelimit", "typed_config": rl}


def _policy_routes(policy: FilterPolicy, grpc_check: bool,
                   server_metadata: dict[str, Any] | None) -> list[dict[str, Any]]:
    # Query strings are refused before the Triton routes (their regexes see the path only).
    # Envoy tries routes in order: the gRPC routes (exact path + content-type, cheap) go before
    # the HTTP routes (one RE2 match each), so a gRPC call does not pay for ~20 regexes that can
    # never match it. The two sets are disjoint (/inference.* vs /v2/*), so order is not policy.
    metadata = ([server_metadata_route(policy, server_metadata)]
                if server_metadata is not None and policy.allowed(Category.METADATA) else [])
    return ([deny_query_route()] + compression_routes() + grpc_routes(policy, grpc_check) +
            shadow_deny_routes(policy) + metadata + allowed_http_routes(policy) + deny_routes())


def access_log(path: str) -> dict[str, Any]:
    """JSON lines: who, what category/model, outcome, sizes, time. Never bodies or credentials."""
    fmt = {
        "time": "%START_TIME%", "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "method": "%REQ(:METHOD)%",
        "path": "%REQ(:PATH)%", "route": "%ROUTE_NAME%", "status": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS_NUMBER%", "bytes_in": "%BYTES_RECEIVED%", "bytes_out": "%BYTES_SENT%",
        "duration_ms": "%DURATION%", "flags": "%RESPONSE_FLAGS%", "upstream": "%UPSTREAM_CLUSTER%",
        # gRPC: read from the message when the model check runs. HTTP: the path names the model;
        # extracting it again per request (header_to_metadata) cost 6% of Envoy's CPU per request.
        "model": "%DYNAMIC_METADATA(" + FIELD_NS + ":model_name)%",
        "request_content_length": "%REQ(CONTENT-LENGTH)%", "request_transfer_encoding": "%REQ(TRANSFER-ENCODING)%",
    }
    if path == "stdout":
        return {"name": "envoy.access_loggers.stdout", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"json_format": fmt}}}
    return {"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": path, "log_format": {"json_format": fmt}}}
