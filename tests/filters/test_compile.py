"""Compile policies to Envoy protos (parsed by the real xds-protos schemas) and inspect them."""

from __future__ import annotations

import re

from filters.compile import compile_policy, http_route_regex, model_fields
from filters.policy import parse_filter_policy
from gateway import envoy_config as ec
from triton_backend.catalog import GRPC_METHODS, HTTP_ROUTES, classify_grpc


def plan_for(doc: dict | None = None, models: list[str] | None = None):  # type: ignore[no-untyped-def]
    policy = parse_filter_policy(doc or {}).with_models(models or ["add_sub", "text_transform"])
    return policy, compile_policy(policy, access_log_path="/tmp/access.log")


def routes_of(plan) -> list[dict]:  # type: ignore[no-untyped-def]
    options = ec.ListenerOptions(http_filters=plan.http_filters, pre_routes=plan.pre_routes, routes=plan.routes,
                                 hcm_extras=plan.hcm_extras, network_filters=plan.network_filters,
                                 route_extras=plan.route_extras)
    ec.listener(options)  # validates filters and connection-manager settings against the schema
    return ec.to_json(ec.route_configuration(options))["virtual_hosts"][0]["routes"]


def test_compiles_to_valid_envoy_config() -> None:
    _, plan = plan_for()
    routes = routes_of(plan)
    names = [r["name"] for r in routes]
    assert names[:4] == ["hygiene:percent", "hygiene:dotdot", "hygiene:double-slash", "hygiene:backslash"]
    assert names.index("deny:query") < names.index("inference:model-infer")
    assert names[-1] == "deny:not-found"
    # gRPC calls are routed before any regex route is tried (cost), which is only safe because
    # no HTTP route's regex can match a gRPC method path:
    first_regex = min(i for i, r in enumerate(routes) if "safe_regex" in r["match"])
    last_grpc = max(i for i, r in enumerate(routes) if r["match"].get("path", "").startswith("/inference."))
    assert last_grpc < first_regex
    import re

    from triton_backend.catalog import GRPC_METHODS
    for r in routes:
        regex = r["match"].get("safe_regex", {}).get("regex")
        if regex:
            assert not any(re.search(regex, m.path) for m in GRPC_METHODS), r["name"]
    filters = [f["name"] for f in plan.http_filters]
    assert filters == ["envoy.filters.http.header_mutation", "envoy.filters.http.buffer",
                       "envoy.filters.http.grpc_field_extraction", "envoy.filters.http.rbac"]
    assert plan.hcm_extras["normalize_path"] is False and plan.hcm_extras["merge_slashes"] is False
    assert plan.hcm_extras["path_with_escaped_slashes_action"] == "REJECT_REQUEST"


def test_denied_grpc_methods_never_route_to_triton() -> None:
    _, plan = plan_for()
    for route in routes_of(plan):
        if route["name"].startswith("deny:") and route["name"][5:] in {m.method for m in GRPC_METHODS}:
            assert "route" not in route and route["direct_response"]["status"] == 403
    by_name = {r["name"]: r for r in routes_of(plan)}
    assert "deny:RepositoryModelLoad" in by_name and "deny:SystemSharedMemoryRegister" in by_name
    infer = by_name["inference:ModelInfer"]
    assert infer["route"]["cluster"] == "triton_grpc"
    rbac = infer["typed_per_filter_config"]["envoy.filters.http.rbac"]["rbac"]["rules"]
    assert "add_sub" in str(rbac) and "text_transform" in str(rbac)
    # a unary call is buffered whole: grpc_max_message_bytes is enforced and the upstream stream
    # is opened only for a complete request; a client stream goes to its own upstream budget
    buffer = infer["typed_per_filter_config"]["envoy.filters.http.buffer"]["buffer"]
    assert buffer["max_request_bytes"] == 64 * 2**20 + 5
    stream = by_name["inference:ModelStreamInfer"]
    assert stream["typed_per_filter_config"]["envoy.filters.http.buffer"]["disabled"] is True
    assert stream["route"]["cluster"] == "triton_grpc_stream"
    assert stream["route"]["max_stream_duration"] == {"max_stream_duration": "0s"}
    # generate_stream (opt-in) has its own upstream budget too
    _, gen = plan_for({"expose": {"generate": "allow"}})
    streaming = [r for r in routes_of(gen) if r["name"] == "generate:model-generate-stream"]
    assert streaming and all(r["route"]["cluster"] == "triton_http_stream" for r in streaming)


def test_http_routes_restricted_to_allowed_models() -> None:
    policy, plan = plan_for({"models": {"add_sub": [1]}})
    infer = next(r for r in HTTP_ROUTES if r.name == "model-infer")
    regex = http_route_regex(infer, policy)
    assert regex is not None
    assert re.match(regex, "/v2/models/add_sub/versions/1/infer")
    # pinned versions must be named: Triton would serve its default version for an unversioned path
    assert not re.match(regex, "/v2/models/add_sub/infer")
    assert not re.match(regex, "/v2/models/add_sub/versions/2/infer")
    assert not re.match(regex, "/v2/models/other/infer")
    assert not re.match(regex, "/v2/models/add_subX/infer")


def test_body_limits_per_category() -> None:
    _, plan = plan_for({"limits": {"max_request_bytes": "1MiB",
                                   "max_request_bytes_by_category": {"inference": "3MiB"}}})
    def buffers(name: str) -> list[int]:
        return [r["typed_per_filter_config"]["envoy.filters.http.buffer"]["buffer"]["max_request_bytes"]
                for r in routes_of(plan) if r["name"] == name]
    # a declared Content-Length up to the category limit; a body without one up to the chunked limit
    assert buffers("inference:model-infer") == [3 * 2**20, 2**20]
    assert buffers("metadata:model-ready") == [2**20, 2**20]
    _, small = plan_for({"limits": {"max_chunked_request_bytes": "4KiB"}})
    assert [r["typed_per_filter_config"]["envoy.filters.http.buffer"]["buffer"]["max_request_bytes"]
            for r in routes_of(small) if r["name"] == "inference:model-infer"] == [64 * 2**20, 4096]


def test_grpc_model_check_only_when_narrower_than_served() -> None:
    policy = parse_filter_policy({}).with_models(["add_sub", "text_transform"])
    same = compile_policy(policy, access_log_path=None, served_models=["add_sub", "text_transform"])
    assert "envoy.filters.http.grpc_field_extraction" not in [f["name"] for f in same.http_filters]
    narrower = compile_policy(parse_filter_policy({"models": ["add_sub"]}), access_log_path=None,
                              served_models=["add_sub", "text_transform"])
    assert "envoy.filters.http.grpc_field_extraction" in [f["name"] for f in narrower.http_filters]
    versions = compile_policy(parse_filter_policy({"models": {"add_sub": [1], "text_transform": "*"}}),
                              access_log_path=None, served_models=["add_sub", "text_transform"])
    assert "envoy.filters.http.rbac" in [f["name"] for f in versions.http_filters]


def test_filters_off_forwards_everything() -> None:
    _, plan = plan_for({"enabled": False})
    assert plan.routes is None and plan.http_filters == []
    # Compressed bodies stay refused and the connection-level protections stay on.
    assert [r["name"] for r in plan.pre_routes] == ["deny:grpc-compressed", "deny:compressed"]
    assert plan.overload_manager and plan.filter_chain_extras["transport_socket_connect_timeout"] == "10s"
    canonical = plan_for({"enabled": False})[0].canonical()["limits"]
    assert "max_request_bytes" not in canonical and "grpc_max_message_bytes" not in canonical
    assert canonical["max_connections"] == 16384


def test_model_fields_come_from_descriptors() -> None:
    assert model_fields(classify_grpc("/inference.GRPCInferenceService/ModelInfer")) == ("model_name", "model_version")
    assert model_fields(classify_grpc("/inference.GRPCInferenceService/ModelReady")) == ("name", "version")
    assert model_fields(classify_grpc("/inference.GRPCInferenceService/RepositoryModelLoad"))[0] == "model_name"


def test_auth_exemptions_do_not_leak_onto_other_routes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Regression: a shared per-route dict once carried the health exemption to every route."""
    import hashlib

    doc = {"auth": {"api_keys": {"keys": [{"name": "a", "sha256": hashlib.sha256(b"k").hexdigest()}]}}}
    _, plan = plan_for(doc)
    routes = routes_of(plan)
    exempt = {r["name"] for r in routes
              if r.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_authz", {}).get("disabled")}
    for name in exempt:
        category = name.split(":", 1)[0]
        assert category in ("health", "hygiene", "deny", "ratls-evidence", "ratls-health") or \
            name.startswith("grpc-reflection") or name.endswith(":too-large"), name
    assert any(r["name"] == "inference:model-infer" for r in routes)
    assert "inference:model-infer" not in exempt and "inference:ModelInfer" not in exempt


def test_every_route_says_what_it_is_in_its_metadata() -> None:
    """The kind of a route (and the catalog category it serves or refuses) travels as route
    metadata: nothing has to parse it back out of the route's name."""
    from filters.route_facts import RouteKind, category_of, kind_of

    grpc = {f"{m.category.value}:{m.method}": m.category.value for m in GRPC_METHODS}
    http = {f"{r.category.value}:{r.name}": r.category.value for r in HTTP_ROUTES}
    _, plan = plan_for({"expose": {"generate": "allow"}})
    routes = routes_of(plan)
    assert all(kind_of(r) is not None for r in routes)
    for route in routes:
        if kind_of(route) in (RouteKind.TRITON, RouteKind.ANSWER):
            assert category_of(route) == {**grpc, **http}[route["name"]], route["name"]
        assert (kind_of(route) is RouteKind.REFUSAL) == ("direct_response" in route and route["name"] !=
                                                         "metadata:server-metadata"), route["name"]
    control = [r["name"] for r in routes if kind_of(r) is RouteKind.CONTROL]
    assert control == ["ratls-evidence", "ratls-health", "grpc-reflection-v1", "grpc-reflection-v1alpha"]


def test_hot_first_route_order_routes_every_path_like_catalog_order() -> None:
    """allowed_http_routes tries inference first (hot path). That is only correct if every concrete
    path reaches the same route as in catalog order (e.g. /v2/models/stats stays the statistics
    route even with a model named 'stats'); check it with every category exposed."""
    from filters.policy import DANGEROUS
    from triton_backend.catalog import Category

    dangerous = sorted(c.value for c in DANGEROUS)
    doc = {"expose": {c.value: "allow" for c in Category}, "i_understand_the_risk": dangerous}
    policy, plan = plan_for(doc, ["add_sub", "stats", "ready"])
    routes = [r for r in plan.routes if "route" in r and not r["name"].startswith(("grpc", "deny"))
              and r["match"].get("headers", [{}])[0].get("name") == ":method"]
    names = {r["name"] for r in routes}
    rank = {f"{r.category.value}:{r.name}": i for i, r in enumerate(HTTP_ROUTES)}
    catalog_order = sorted(routes, key=lambda r: rank[r["name"]])  # stable: variants keep their order

    def matches(route: dict, path: str) -> bool:  # type: ignore[type-arg]
        m = route["match"]
        return m.get("path") == path if "path" in m else re.search(m["safe_regex"]["regex"], path) is not None

    for route in HTTP_ROUTES:
        for model in ("add_sub", "stats", "ready"):
            for version in ("", "/versions/3"):
                if "[/versions/{version}]" not in route.template and version:
                    continue
                path = (route.template.replace("[/versions/{version}]", version).replace("{model}", model)
                        .replace("{region}", "r1"))
                compiled = next((r["name"] for r in routes if matches(r, path)), None)
                in_catalog_order = next((r["name"] for r in catalog_order if matches(r, path)), None)
                assert compiled == in_catalog_order, path
    assert names and routes[0]["name"].startswith("inference:")


def test_refusal_bodies_are_json_whatever_the_message_says() -> None:
    """A reason quoting a model name (or carrying a backslash) still gives a JSON body Triton's
    clients can parse; it used to be pasted into a string literal."""
    import json as _json

    from filters.compile import refusal_routes

    message = 'model "add_sub" is not served \\ see the manifest'
    http = refusal_routes("refused", 503, message)[1]
    body = http["direct_response"]["body"]["inline_string"]
    assert _json.loads(body) == {"error": message}


def test_region_routes_match_real_region_names() -> None:
    """The shared-memory routes name a region: their regex matches a real region's path, not
    the literal text '{region}' (with shared memory exposed those calls were refused as unknown)."""
    import re as _re

    from filters.compile import http_route_regex
    from filters.policy import parse_filter_policy
    from triton_backend.catalog import HTTP_ROUTES

    policy = parse_filter_policy({"expose": {"shared-memory": "allow"}, "i_understand_the_risk": ["shared-memory"]})
    route = next(r for r in HTTP_ROUTES if r.name == "system-shm-region-status")
    regex = http_route_regex(route, policy)
    assert regex is not None and _re.fullmatch(regex, "/v2/systemsharedmemory/region/input_0/status")
    assert not _re.fullmatch(regex, "/v2/systemsharedmemory/region/a%2Fb/status")
