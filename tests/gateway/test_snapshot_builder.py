from __future__ import annotations

import datetime as dt
from dataclasses import replace as dc_replace
from pathlib import Path

import pytest

from filters.compile import compile_policy
from filters.policy import parse_filter_policy
from gateway import envoy_config as ec
from gateway.identity import IdentityManager
from gateway.snapshot_builder import InconsistentSnapshot, SnapshotInputs, build_snapshot, snapshot_problems
from gateway.xds.snapshot import Snapshot
from ratls.platforms.sim.chain import SimChain
from ratls.platforms.sim.platform import SimPlatform


@pytest.fixture
def inputs(sim_chain: SimChain, tmp_path: Path) -> SnapshotInputs:
    identity = IdentityManager(SimPlatform(chain=sim_chain), lifetime=dt.timedelta(hours=1), rotate_at=0.5,
                               curve="p256", sans=["localhost"], common_name="gw", models=None, config_digest=None)
    policy = parse_filter_policy({}).with_models(["add_sub"])
    plan = compile_policy(policy, access_log_path=None, served_models=["add_sub"])
    options = ec.ListenerOptions(http_filters=plan.http_filters, pre_routes=plan.pre_routes, routes=plan.routes,
                                 hcm_extras=plan.hcm_extras, route_extras=plan.route_extras)
    upstreams = ec.Upstreams("127.0.0.1", 8000, 8001, tmp_path / "control.sock", tmp_path / "reflection.sock")
    return SnapshotInputs(identity.issue(), upstreams, options, plan)


def test_a_consistent_snapshot_holds_every_resource_once(inputs: SnapshotInputs) -> None:
    snapshot = build_snapshot("3", inputs)
    assert snapshot.version == "3" and snapshot_problems(snapshot) == []
    assert [sorted(snapshot.resources[t]) for t in ec.PUSH_ORDER[1:]] == [
        [ec.SECRET_NAME], [ec.ROUTE_NAME], [ec.LISTENER_NAME]]
    assert set(snapshot.resources[ec.TYPE_CLUSTER]) == {ec.CLUSTER_TRITON_HTTP, ec.CLUSTER_TRITON_GRPC,
                                                         ec.CLUSTER_TRITON_GRPC_STREAM, ec.CLUSTER_TRITON_HTTP_STREAM,
                                                         ec.CLUSTER_CONTROL, ec.CLUSTER_REFLECTION}


def test_a_refusal_replaces_the_triton_routes(inputs: SnapshotInputs) -> None:
    from dataclasses import replace

    snapshot = build_snapshot("4", replace(inputs, refusal="model repository changed after attestation"))
    routes = ec.to_json(snapshot.resources[ec.TYPE_ROUTE][ec.ROUTE_NAME])["virtual_hosts"][0]["routes"]
    assert not any(r.get("route", {}).get("cluster", "").startswith("triton") for r in routes)
    assert [r["name"] for r in routes][-2:] == ["upstream-refused:grpc", "upstream-refused"]


def test_a_route_to_a_missing_cluster_is_never_pushed(inputs: SnapshotInputs) -> None:
    inputs.listener.extra_routes = [{"name": "stray", "match": {"prefix": "/x"}, "route": {"cluster": "nowhere"}}]
    with pytest.raises(InconsistentSnapshot, match="'stray'.*missing cluster 'nowhere'"):
        build_snapshot("5", inputs)


def test_ext_authz_needs_its_cluster(inputs: SnapshotInputs) -> None:
    # the ext_authz filter names ratls_authz, which only exists when the authz socket is set
    auth = compile_policy(parse_filter_policy({"auth": {"api_keys": {"keys": [{"name": "a", "sha256": "0" * 64}]}}})
                          .with_models(["add_sub"]), access_log_path=None)
    inputs.listener.http_filters = auth.http_filters
    with pytest.raises(InconsistentSnapshot, match="missing cluster 'ratls_authz'"):
        build_snapshot("6", inputs)
    inputs.upstreams.authz_socket = Path("/run/authz.sock")
    assert build_snapshot("6", inputs).version == "6"


def test_dangling_listener_references_are_found(inputs: SnapshotInputs) -> None:
    good = build_snapshot("7", inputs)
    broken = Snapshot("8", {ec.TYPE_CLUSTER: good.resources[ec.TYPE_CLUSTER],
                            ec.TYPE_LISTENER: good.resources[ec.TYPE_LISTENER]})
    problems = snapshot_problems(broken)
    assert any("missing route configuration 'ratls_routes'" in p for p in problems)
    assert any("missing secret 'ratls_server_cert'" in p for p in problems)
    assert "no Secret" in problems and "no RouteConfiguration" in problems


def test_a_listener_without_its_ticket_keys_is_never_pushed(inputs: SnapshotInputs) -> None:
    resuming = dc_replace(inputs, listener=dc_replace(inputs.listener, session_tickets=True))
    with pytest.raises(InconsistentSnapshot, match="resumes sessions with the missing secret"):
        build_snapshot("5", resuming)
    snapshot = build_snapshot("6", dc_replace(resuming, ticket_keys=(b"k" * 80,)))
    secret = snapshot.resources[ec.TYPE_SECRET][ec.SECRET_TICKET_KEYS]
    assert [k.inline_bytes for k in secret.session_ticket_keys.keys] == [b"k" * 80]
