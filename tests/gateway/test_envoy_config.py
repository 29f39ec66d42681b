from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import json_format

from gateway import envoy_config as ec


@pytest.fixture
def upstreams(tmp_path: Path) -> ec.Upstreams:
    return ec.Upstreams("127.0.0.1", 8000, 8001, tmp_path / "control.sock", tmp_path / "reflection.sock")


def test_clusters(upstreams: ec.Upstreams) -> None:
    by_name = {c.name: ec.to_json(c) for c in ec.clusters(upstreams)}
    assert set(by_name) == {ec.CLUSTER_TRITON_HTTP, ec.CLUSTER_TRITON_GRPC, ec.CLUSTER_TRITON_GRPC_STREAM,
                            ec.CLUSTER_TRITON_HTTP_STREAM, ec.CLUSTER_CONTROL, ec.CLUSTER_REFLECTION}
    grpc = by_name[ec.CLUSTER_TRITON_GRPC]
    assert "http2_protocol_options" in str(grpc["typed_extension_protocol_options"])
    assert "http2_protocol_options" not in str(by_name[ec.CLUSTER_TRITON_HTTP])
    control = by_name[ec.CLUSTER_CONTROL]
    assert control["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]["path"] == \
        str(upstreams.control_socket)


def test_listener_is_tls_only_via_sds() -> None:
    doc = ec.to_json(ec.listener(ec.ListenerOptions(port=9443)))
    chain = doc["filter_chains"][0]
    tls = chain["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls["alpn_protocols"] == ["h2", "http/1.1"]
    assert tls["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_3"
    assert tls["tls_certificate_sds_secret_configs"][0]["name"] == ec.SECRET_NAME
    assert "ads" in tls["tls_certificate_sds_secret_configs"][0]["sds_config"]
    assert "tls_certificates" not in tls  # the key never appears in static config
    hcm = chain["filters"][0]["typed_config"]
    assert hcm["rds"]["route_config_name"] == ec.ROUTE_NAME
    assert hcm["http_filters"][-1]["name"] == "envoy.filters.http.router"
    assert doc["enable_reuse_port"] is False  # a second gateway cannot share the port


def test_routes_order_and_protocol_split() -> None:
    routes = ec.to_json(ec.route_configuration(ec.ListenerOptions()))["virtual_hosts"][0]["routes"]
    names = [r["name"] for r in routes]
    assert names == ["ratls-evidence", "ratls-health", "grpc-reflection-v1", "grpc-reflection-v1alpha",
                     "triton-grpc", "triton-http"]
    grpc = routes[names.index("triton-grpc")]
    assert grpc["match"]["headers"][0]["string_match"] == {"prefix": "application/grpc"}
    assert grpc["route"]["timeout"] == "0s"  # streaming is never cut by a route timeout


def test_secret_holds_key_inline() -> None:
    s = ec.secret(b"CERT", b"KEY")
    assert s.name == ec.SECRET_NAME and s.tls_certificate.private_key.inline_bytes == b"KEY"


def test_bootstrap_points_only_at_the_xds_socket(tmp_path: Path) -> None:
    spec = ec.bootstrap(tmp_path / "xds.sock", tmp_path / "admin.sock")
    assert spec["admin"]["address"] == {"pipe": {"path": str(tmp_path / "admin.sock"), "mode": 0o600}}
    clusters = spec["static_resources"]["clusters"]
    assert [c["name"] for c in clusters] == [ec.CLUSTER_XDS]
    assert "listeners" not in spec["static_resources"]
    path = tmp_path / "envoy.json"
    ec.write_bootstrap(path, spec)
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_invalid_resource_is_caught_before_envoy() -> None:
    options = ec.ListenerOptions(extra_routes=[{"name": "x", "match": {"prefixx": "/"}}])
    with pytest.raises(json_format.ParseError):
        ec.route_configuration(options)
