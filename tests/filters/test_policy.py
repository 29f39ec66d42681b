from __future__ import annotations

import pytest

from filters.policy import parse_filter_policy, parse_size
from ratls.errors import ConfigError
from triton_backend.catalog import Category, Exposure


def test_defaults_are_default_deny() -> None:
    p = parse_filter_policy({})
    assert p.allowed(Category.INFERENCE) and p.allowed(Category.HEALTH) and p.allowed(Category.METADATA)
    for category in (Category.GENERATE, Category.MODEL_CONFIG, Category.STATISTICS, Category.MODEL_REPOSITORY,
                     Category.SHARED_MEMORY, Category.TRACE, Category.LOGGING, Category.METRICS):
        assert not p.allowed(category)
    assert p.models is None and p.with_models(["b", "a"]).models == {"a": (), "b": ()}


def test_opt_in_and_versions() -> None:
    p = parse_filter_policy({"expose": {"model-config": "allow", "generate": "allow"},
                             "models": {"add_sub": [1, 2], "llm": "*"}})
    assert p.exposure[Category.MODEL_CONFIG] is Exposure.ALLOW and p.allowed(Category.GENERATE)
    assert p.models == {"add_sub": ("1", "2"), "llm": ()}
    assert parse_filter_policy({"models": ["a"]}).models == {"a": ()}


def test_dangerous_exposure_needs_acknowledgement() -> None:
    with pytest.raises(ConfigError, match="model-repository can execute code") as info:
        parse_filter_policy({"expose": {"model-repository": "allow"}})
    assert "i_understand_the_risk" in str(info.value)
    p = parse_filter_policy({"expose": {"model-repository": "allow"}, "i_understand_the_risk": ["model-repository"]})
    assert p.allowed(Category.MODEL_REPOSITORY) and p.allow_dangerous == ("model-repository",)


@pytest.mark.parametrize(("doc", "message"), [
    ({"expose": {"inferense": "allow"}}, "filters.expose.inferense: unknown API category"),
    ({"expose": {"inference": "yes"}}, "expected allow or deny"),
    ({"modles": []}, "filters.modles: unknown key"),
    ({"models": {"../x": []}}, "not a valid model name"),
    ({"models": {"a": [0]}}, "positive version numbers"),
    ({"limits": {"max_request_bytes": "lots"}}, "filters.limits.max_request_bytes: cannot read size"),
    ({"limits": {"max_conections": 5}}, "filters.limits.max_conections: unknown key"),
    ({"limits": {"rate_limit": {"requests_per_second": -1}}}, "requests_per_second"),
    ({"limits": {"max_request_bytes_by_category": {"nope": 1}}}, "unknown API category"),
    ({"limits": {"request_timeout": "forever"}}, "request_timeout"),
    ({"enabled": "yes"}, "true or false"),
    ({"limits": {"idle_timeout": "0s"}}, "filters.limits.idle_timeout: must be longer than 0"),
    ({"limits": {"tls_handshake_timeout": 0}}, "tls_handshake_timeout: must be longer than 0"),
    ({"limits": {"compressed_requests": "inflate"}}, "compressed_requests: expected one of refuse"),
    ({"enabled": False, "auth": {"api_keys": {"header": "x-api-key", "keys": [
        {"name": "a", "sha256": "0" * 64, "models": "*"}]}}}, "client authentication needs the request filters"),
    ([], "expected a mapping"),
])
def test_invalid_policies_name_the_key(doc: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_filter_policy(doc)


def test_sizes() -> None:
    assert parse_size("8MiB", "x") == 8 * 2**20 and parse_size("1KB", "x") == 1000 and parse_size(12, "x") == 12


def test_canonical_form_changes_with_the_policy() -> None:
    a = parse_filter_policy({}).with_models(["add_sub"]).canonical()
    b = parse_filter_policy({"expose": {"model-config": "allow"}}).with_models(["add_sub"]).canonical()
    c = parse_filter_policy({}).with_models(["add_sub", "other"]).canonical()
    assert a != b and a != c and a == parse_filter_policy({}).with_models(["add_sub"]).canonical()


def test_filters_off_attests_only_what_is_enforced() -> None:
    doc = parse_filter_policy({"enabled": False}).canonical()
    assert doc["exposure"] == "forwarded" and doc["models"] == "*" and doc["auth"] is None
    assert doc["strip_headers"] == [] and "max_request_bytes" not in doc["limits"]
    assert "request_timeout_s" not in doc["limits"] and "upstream_max_streams" not in doc["limits"]


def test_stdout_access_log_attests_no_size_cap() -> None:
    assert parse_filter_policy({"access_log": "stdout"}).canonical()["limits"]["access_log_max_bytes"] is None
    assert parse_filter_policy({}).canonical()["limits"]["access_log_max_bytes"] == 16 * 2**20


def test_long_durations_are_valid_envoy_durations() -> None:
    from filters.compile import compile_policy, duration

    assert duration(1_000_000) == "1000000s" and duration(0.25) == "0.25s" and duration(300) == "300s"
    plan = compile_policy(parse_filter_policy({"limits": {"request_timeout": "300h"}}), access_log_path=None)
    assert plan.hcm_extras["common_http_protocol_options"]["max_stream_duration"] == "1080000s"
