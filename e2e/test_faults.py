"""Faults on the real stack: Triton dies, the xDS socket vanishes, evidence collection fails,
the certificate approaches its rotation time."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratls.errors import CollectionError
from ratls.platforms.sim.chain import load_chain
from ratls.platforms.sim.platform import SimPlatform

from .load import fetch_pem, unverified
from .stack import Stack, admin_request, free_port, pids_alive, start_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fstack(sim_state: Path) -> Iterator[Stack]:
    s = start_stack({"triton": {"restart_backoff_max": "2s"}}, sim_dir=sim_state)
    yield s
    s.stop()


def public_health(stack: Stack) -> int:
    try:
        return urllib.request.urlopen(f"{stack.url}/healthz", context=unverified(), timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_for(predicate, timeout: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_triton_killed_then_recovers(fstack: Stack) -> None:
    before = fstack.status()
    os.kill(before["triton"]["pid"], signal.SIGKILL)
    assert wait_for(lambda: public_health(fstack) == 503, 15), "gateway did not report unready"
    body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{fstack.metrics_port}/admin/status").read())
    assert "upstream unavailable" in body["reasons"]
    assert wait_for(lambda: fstack.status()["ready"], 90), fstack.log()[-2000:]
    after = fstack.status()
    assert after["triton"]["pid"] != before["triton"]["pid"]
    assert pids_alive([before["triton"]["pid"]]) == []
    ok = urllib.request.urlopen(urllib.request.Request(
        f"{fstack.url}/v2/models/add_sub/infer", data=json.dumps({"inputs": [
            {"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [1]},
            {"name": "INPUT1", "shape": [1], "datatype": "FP32", "data": [1]}]}).encode(),
        headers={"Content-Type": "application/json"}), context=unverified(), timeout=30)
    assert ok.status == 200
    assert "ratls_triton_restarts_total 1" in fstack.metrics()


def test_xds_socket_removed_then_envoy_restart_still_configures(fstack: Stack) -> None:
    sock = fstack.workdir / "run" / "xds.sock"
    sock.unlink()
    assert wait_for(sock.exists, 10), "the gateway did not re-create its xDS socket"
    envoy = fstack.status()["envoy"]["pid"]
    cert = fetch_pem(fstack.port)
    os.kill(envoy, signal.SIGKILL)
    assert wait_for(lambda: fstack.status()["ready"] and fstack.status()["envoy"]["pid"] != envoy, 60)
    assert wait_for(lambda: _accepts(fstack.port), 10)
    assert fetch_pem(fstack.port) == cert
    assert "ratls_xds_socket_recreated_total 1" in fstack.metrics()


class FlakyPlatform(SimPlatform):
    """The simulated platform with a switch that makes the 'hardware' refuse to report."""

    broken = False

    def collect(self, report_data: bytes):  # type: ignore[no-untyped-def]
        if FlakyPlatform.broken:
            raise CollectionError("simulated firmware error: report request refused")
        return super().collect(report_data)


def _config(sim_state: Path, run: Path, **extra: str):  # type: ignore[no-untyped-def]
    from gateway.config import load_config

    env = {"RATLS_GATEWAY__LISTEN__ADDRESS": "127.0.0.1", "RATLS_GATEWAY__LISTEN__PORT": str(free_port()),
           "RATLS_GATEWAY__IDENTITY__PLATFORM": "sim", "RATLS_GATEWAY__CONTROL__METRICS_PORT": str(free_port()),
           "RATLS_GATEWAY__CONTROL__RUN_DIR": str(run), **extra}
    return load_config(None, env)


def test_evidence_failure_keeps_serving_and_alarms(sim_state: Path, tmp_path: Path) -> None:
    from gateway.app import Gateway

    config = _config(sim_state, tmp_path / "run", RATLS_GATEWAY__IDENTITY__RETRY_INTERVAL="1s")

    async def scenario() -> None:
        FlakyPlatform.broken = False
        gw = Gateway(config, platform=FlakyPlatform(chain=load_chain(sim_state)))
        await gw.start()
        try:
            served = await asyncio.to_thread(fetch_pem, config.listen.port)
            FlakyPlatform.broken = True
            reply = await asyncio.to_thread(admin_request, tmp_path / "run" / "admin.sock", "/admin/rotate")
            assert reply[0] == 503 and "firmware error" in reply[1]["error"]
            assert gw.identity is not None and gw.identity.current is not None
            assert gw.identity.current.serial == 1 and gw.identity.evidence_failures == 1
            assert await asyncio.to_thread(fetch_pem, config.listen.port) == served  # still-valid cert served
            assert gw.readiness() == []  # the certificate is still valid: keep serving
            metrics = await asyncio.to_thread(_get, f"http://127.0.0.1:{config.control.metrics_port}/metrics")
            assert "ratls_evidence_failures_total 1" in metrics
            FlakyPlatform.broken = False
            await asyncio.sleep(1.0)  # admin rotations are at most one per second
            reply = await asyncio.to_thread(admin_request, tmp_path / "run" / "admin.sock", "/admin/rotate")
            assert reply[0] == 200 and gw.identity.current.serial == 2
        finally:
            FlakyPlatform.broken = False
            await gw.stop()

    asyncio.run(scenario())


def test_rotation_happens_before_expiry(sim_state: Path, tmp_path: Path) -> None:
    from gateway.app import Gateway

    # 2-minute certificates rotated at 10% of their life: a new one every 12 s.
    config = _config(sim_state, tmp_path / "run", RATLS_GATEWAY__IDENTITY__LIFETIME="2m",
                     RATLS_GATEWAY__IDENTITY__ROTATE_AT="0.1")

    async def scenario() -> None:
        gw = Gateway(config, platform=SimPlatform(chain=load_chain(sim_state)))
        await gw.start()
        try:
            assert gw.identity is not None and gw.identity.current is not None
            first = gw.identity.current
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and gw.identity.current.serial == first.serial:
                await asyncio.sleep(0.5)
            second = gw.identity.current
            assert second.serial == first.serial + 1
            assert second.cert.not_valid_before_utc < first.not_after  # overlap: never an expired cert
            assert await gw.ads.wait_acked(gw._snapshot_version, 10)
            served = await asyncio.to_thread(fetch_pem, config.listen.port)
            assert served.strip() == second.cert_pem.decode().strip()
        finally:
            await gw.stop()

    asyncio.run(scenario())


def _accepts(port: int) -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _post(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST", data=b""), timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()

