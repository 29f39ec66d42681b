"""Compile a FilterPolicy into Envoy's native HTTP filters and routes, from the API catalog
only (no Triton path is written here). No request pays a Python hop: everything below runs
inside Envoy (buffer, header mutation, local rate limit, gRPC field extraction, RBAC)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

from triton_backend.catalog import GRPC_METHODS, HTTP_ROUTES, Category, GrpcMethod, HttpRoute

from .policy import FilterPolicy

CLUSTER_HTTP = "triton_http"
CLUSTER_GRPC = "triton_grpc"
CLUSTER_AUTHZ = "ratls_authz"
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
    auth: Any = None  # the AuthPolicy when client authentication is on


def _local_reply(name: str, status: int, message: str, match: dict[str, Any]) -> dict[str, Any]:
    body = '{"error":"' + message.replace('"', "'") + '"}\n'
    return {"name": name, "match": match, "direct_response": {"status": status, "body": {"inline_string": body}},
            "response_headers_to_add": JSON_CT}


def _path_contains(text: str) -> dict[str, Any]:
    return {"prefix": "/", "headers": [{"name": ":path", "string_match": {"contains": text}}]}


def hygiene_routes() -> list[dict[str, Any]]:
    """Raw-path tricks are refused before any routing decision (Envoy does not normalise)."""
    return [
        _local_reply("hygiene:percent", 400, "percent-encoded paths are refused", _path_contains("%")),
        _local_reply("hygiene:dotdot", 400, "'..' in paths is refused", _path_contains("..")),
        _local_reply("hygiene:double-slash", 400, "'//' in paths is refused", _path_contains("//")),
        _local_reply("hygiene:backslash", 400, "'\\\\' in paths is refused", _path_contains("\\")),
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
            parts.append(re.escape(name) + "(?:/versions/(?:" + "|".join(versions) + "))?")
        else:
            parts.append(re.escape(name) + "(?:/versions/[0-9]{1,19})?")
    return "(?:" + "|".join(parts) + ")"


def http_route_regex(route: HttpRoute, policy: FilterPolicy) -> str | None:
    """The route's raw-path regex, restricted to the allowed models (None: no model allowed)."""
    template = route.template
    if "{model}" not in template:
        return "^" + re.escape(template) + "$"
    with_versions = "[/versions/{version}]" in template
    alternation = _model_alternation(policy, with_versions)
    if alternation is None:
        return None
    escaped = re.escape(template)
    escaped = escaped.replace(re.escape("{model}") + re.escape("[/versions/{version}]"), alternation)
    escaped = escaped.replace(re.escape("{model}"), alternation)
    escaped = escaped.replace(re.escape("{region}"), r"[A-Za-z0-9_.\-]{1,128}")
    return "^" + escaped + "$"


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


def allowed_http_routes(policy: FilterPolicy) -> list[dict[str, Any]]:
    routes = []
    for route in sorted(HTTP_ROUTES, key=_hot_first):
        if not policy.allowed(route.category):
            continue
        regex = http_route_regex(route, policy)
        if regex is None:
            continue
        name = f"{route.category.value}:{route.name}"
        limit = _request_limit(policy, route.category)
        action = {"cluster": CLUSTER_HTTP,
                  "timeout": "0s" if route.streaming else f"{policy.limits.request_timeout_s:g}s",
                  "idle_timeout": f"{policy.limits.stream_idle_timeout_s:g}s"}
        method = _method_match(route.methods)
        # A request that declares Content-Length within the limit is forwarded as it came: the
        # HTTP framing already guarantees Triton gets exactly that many bytes, with the header.
        routes.append({"name": name, "match": {**_path_match(route, regex), "headers": [method, {
            "name": "content-length", "range_match": {"start": 0, "end": limit + 1}}]}, "route": dict(action),
            "typed_per_filter_config": _no_buffer()})
        # A declared Content-Length over the limit is refused before any body byte is read.
        routes.append(_local_reply(f"{name}:too-large", 413, f"request body larger than {limit} bytes",
                                   {**_path_match(route, regex), "headers": [method, {
                                       "name": "content-length", "present_match": True}]}))
        # No Content-Length (chunked, or HTTP/2 without it): buffer up to the limit (413 above
        # it) and forward with Content-Length, never chunked.
        routes.append({"name": name, "match": {**_path_match(route, regex), "headers": [method]},
                       "route": dict(action), "typed_per_filter_config": _buffer(limit)})
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
        no_version = {"not_id": _dyn({"filter": FIELD_NS, "path": [{"key": version_field}],
                                      "value": {"present_match": True}})}
        principals.append({"and_ids": {"ids": [model_match, {"or_ids": {"ids": [no_version, *allowed_versions]}}]}})
    rules: dict[str, Any] = {"action": "ALLOW", "policies": {}}
    if principals:
        rules["policies"]["allowed-models"] = {"permissions": [{"any": True}],
                                               "principals": [{"or_ids": {"ids": principals}}]}
    return {"envoy.filters.http.rbac": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
        "rbac": {"rules": rules}}}


def grpc_routes(policy: FilterPolicy, per_model: bool = True) -> list[dict[str, Any]]:
    routes = []
    for method in GRPC_METHODS:
        match = {"path": method.path, "headers": [_GRPC_CT]}
        if not policy.allowed(method.category):
            # Catalogued but not exposed: refused here (PERMISSION_DENIED), Triton never sees it.
            routes.append({"name": f"deny:{method.method}", "match": match, "direct_response": {
                "status": 403, "body": {"inline_string": f"ratls-gateway: {method.method} is not exposed by the "
                                                         "gateway policy"}}})
            continue
        streaming = method.client_streaming or method.server_streaming
        entry: dict[str, Any] = {"name": f"{method.category.value}:{method.method}", "match": match,
                                 "route": {"cluster": CLUSTER_GRPC, "timeout": "0s" if streaming else
                                           f"{policy.limits.request_timeout_s:g}s",
                                           "idle_timeout": f"{policy.limits.stream_idle_timeout_s:g}s"}}
        # gRPC is never buffered (streams must stream); message sizes are bounded by Triton's
        # own gRPC limits and the HTTP/2 flow control below.
        rbac = _rbac_models(method, policy) if method.per_model and per_model else {}
        entry["typed_per_filter_config"] = {**_no_buffer(), **rbac}
        routes.append(entry)
    return routes


def deny_query_route() -> dict[str, Any]:
    return _local_reply("deny:query", 400, "query strings are not accepted on Triton routes", _path_contains("?"))


def deny_routes() -> list[dict[str, Any]]:
    denied = []
    for route in HTTP_ROUTES:
        regex = "^" + re.escape(route.template).replace(re.escape("{model}") + re.escape("[/versions/{version}]"),
                                                        r"[^/]+(?:/versions/[^/]+)?")
        regex = regex.replace(re.escape("{model}"), "[^/]+").replace(re.escape("{region}"), "[^/]+") + "$"
        denied.append((route, regex))
    out = [
        {"name": "deny:grpc-unknown", "match": {"prefix": "/", "headers": [_GRPC_CT]},
         "direct_response": {"status": 404, "body": {"inline_string": "ratls-gateway: unknown gRPC method"}}},
    ]
    for route, regex in denied:
        if route.category in (Category.HEALTH, Category.METADATA, Category.INFERENCE):
            continue  # unknown model on an allowed route: plain 404 below, revealing nothing
        out.append(_local_reply(f"deny:{route.name}", 403, f"the Triton {route.category.value} API is not exposed "
                                "by the gateway policy", {"safe_regex": {"regex": regex}}))
    out.append(_local_reply("deny:not-found", 404, "not found", {"prefix": "/"}))
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
    return {"max_tokens": burst, "tokens_per_fill": 1, "fill_interval": f"{1 / rate:g}s"}


def needs_grpc_model_check(policy: FilterPolicy, served: list[str] | None) -> bool:
    """gRPC names the model inside the protobuf body, so checking it costs a parse per request.
    When the allow-list is exactly the attested, fixed set of served models (Triton runs without
    model control, so no other model can appear) Triton itself refuses every other name and the
    check is redundant; it is compiled in whenever the allow-list is narrower or pins versions."""
    if policy.models is None or served is None:
        return True
    return set(policy.models) != set(served) or any(policy.models.values())


def compile_policy(policy: FilterPolicy, *, access_log_path: str | None,
                   served_models: list[str] | None = None) -> FilterPlan:
    plan = FilterPlan()
    lim = policy.limits
    plan.hcm_extras = {
        "normalize_path": False,
        "merge_slashes": False,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "request_headers_timeout": f"{lim.request_headers_timeout_s:g}s",
        "stream_idle_timeout": f"{lim.stream_idle_timeout_s:g}s",
        "max_request_headers_kb": lim.max_request_headers_kb,
        "common_http_protocol_options": {"idle_timeout": f"{lim.idle_timeout_s:g}s",
                                         "max_headers_count": lim.max_headers_count,
                                         "headers_with_underscores_action": "REJECT_REQUEST"},
        "http2_protocol_options": {"max_concurrent_streams": lim.max_concurrent_streams},
    }
    if access_log_path:
        plan.hcm_extras["access_log"] = [access_log(access_log_path)]
    plan.network_filters = [{"name": "envoy.filters.network.connection_limit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
        "stat_prefix": "ratls", "max_connections": lim.max_connections}}]
    plan.cluster_extras = {"circuit_breakers": {"thresholds": [{"max_requests": lim.upstream_max_requests,
                                                                "max_pending_requests": lim.upstream_max_requests,
                                                                "max_connections": lim.upstream_max_requests}]}}
    if not policy.enabled:
        return plan  # filters off: Triton catch-alls, only the connection-level limits above
    filters: list[dict[str, Any]] = [{"name": "envoy.filters.http.header_mutation", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {"request_mutations":
                      [{"remove": h} for h in sorted(policy.strip_headers)] +
                      [{"remove_on_match": {"key_matcher": {"prefix": p}}}
                       for p in sorted(policy.strip_header_prefixes)]},
    }}]
    if lim.rate_limit or lim.per_client_rate_limit:
        rl: dict[str, Any] = {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "ratls_rate_limit",
            "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "rate_limited_as_resource_exhausted": True,
            "always_consume_default_token_bucket": False,
        }
        if lim.rate_limit:
            rl["token_bucket"] = _token_bucket(lim.rate_limit.requests_per_second, lim.rate_limit.burst)
        if lim.per_client_rate_limit:
            rl["descriptors"] = [{"entries": [{"key": "remote_address", "value": ""}],
                                  "token_bucket": _token_bucket(lim.per_client_rate_limit.requests_per_second,
                                                                lim.per_client_rate_limit.burst)}]
            rl["max_dynamic_descriptors"] = 10000
            rl["rate_limits"] = [{"actions": [{"remote_address": {}}]}]
        filters.append({"name": "envoy.filters.http.local_ratelimit", "typed_config": rl})
    grpc_check = needs_grpc_model_check(policy, served_models)
    auth = policy.auth if policy.auth is not None and policy.auth.enabled else None
    if grpc_check or auth is not None:
        filters.append(_field_extraction(policy))  # the model a gRPC request names, for RBAC and authz
    if grpc_check:
        filters.append({"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}})
    if auth is not None:
        filters.append({"name": "envoy.filters.http.ext_authz", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": CLUSTER_AUTHZ}, "timeout": "2s"},
            "failure_mode_allow": False,
            "include_peer_certificate": True,
            "metadata_context_namespaces": [FIELD_NS],
        }})
    filters.append({"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": lim.max_request_bytes}})
    plan.http_filters = filters
    no_authz = {"envoy.filters.http.ext_authz": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "disabled": True}} if auth is not None else {}
    # The evidence API, health and reflection stay open: verifying the gateway needs no account.
    plan.route_extras = {"grpc-reflection-v1": {"typed_per_filter_config": {**_no_buffer(), **no_authz}},
                         "grpc-reflection-v1alpha": {"typed_per_filter_config": {**_no_buffer(), **no_authz}},
                         "ratls-evidence": {"typed_per_filter_config": dict(no_authz)},
                         "ratls-health": {"typed_per_filter_config": dict(no_authz)}}
    plan.auth = auth
    plan.pre_routes = hygiene_routes()
    # Query strings are refused before the Triton routes (their regexes see the path only).
    # Envoy tries routes in order: the gRPC routes (exact path + content-type, cheap) go before
    # the HTTP routes (one RE2 match each), so a gRPC call does not pay for ~20 regexes that can
    # never match it. The two sets are disjoint (/inference.* vs /v2/*), so order is not policy.
    plan.routes = [deny_query_route()] + grpc_routes(policy, grpc_check) + allowed_http_routes(policy) + deny_routes()
    if auth is not None:
        for route in plan.pre_routes:
            route.setdefault("typed_per_filter_config", {}).update(no_authz)
        for route in plan.routes:
            category = route["name"].split(":", 1)[0]
            if category in auth.exempt_categories or "route" not in route:
                route.setdefault("typed_per_filter_config", {}).update(no_authz)
    return plan


def access_log(path: str) -> dict[str, Any]:
    """JSON lines: who, what category/model, outcome, sizes, time. Never bodies or credentials."""
    fmt = {
        "time": "%START_TIME%", "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "method": "%REQ(:METHOD)%",
        "path": "%REQ(:PATH)%", "route": "%ROUTE_NAME%", "status": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS_NUMBER%", "bytes_in": "%BYTES_RECEIVED%", "bytes_out": "%BYTES_SENT%",
        "duration_ms": "%DURATION%", "flags": "%RESPONSE_FLAGS%", "upstream": "%UPSTREAM_CLUSTER%",
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
