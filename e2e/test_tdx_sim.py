"""The whole stack on the simulated TDX platform: quotes produced through a fake configfs-tsm
tree (provider tdx_guest), signed by the simulated quote chain, collateral from the cache, and
verified by clients with the real TDX verifier (our checks + dcap-qvl) against the pinned
simulated root. The TDX path runs like SNP's."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from ratls.client.triton import grpc_client, http_client
from ratls.platforms.sim.tdx_chain import load_tdx_chain
from triton_backend.demo import add_sub_inputs

from .stack import Stack, pids_alive, start_stack
from .test_clients import INFER, inference_entries

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tdx_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    sim_dir = tmp_path_factory.mktemp("sim-tdx")
    s = start_stack({"identity": {"platform": "sim-tdx", "sim_state_dir": str(sim_dir)}}, sim_dir=sim_dir)
    status = s.status()
    children = [p for p in (status["envoy"]["pid"], status["triton"]["pid"]) if p]
    yield s
    assert s.stop() == 0, s.log()[-3000:]
    assert pids_alive(children) == []


def _policy(stack: Stack, path: Path, *, mrtd: str | None = None) -> Path:
    chain = load_tdx_chain(stack.sim_dir / "tdx")
    path.write_text(
        "version: 1\nplatforms: [tdx]\nallow_simulated: true\n"
        f"simulated: {{root_sha256: {chain.root_sha256}}}\n"
        f"tdx:\n  mrtd: ['{mrtd or chain.mrtd.hex()}']\n  debug: false\n  sept_ve_disable: true\n"
        "  accept_tcb_status: [UpToDate]\n  min_tcb_eval_data_number: 17\n"
        "claims:\n  max_age: 24h\n")
    return path


def _ratls(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ratls.cli", *args], capture_output=True, text=True, timeout=90,
                          stdin=subprocess.DEVNULL)


def test_gateway_runs_on_sim_tdx(tdx_stack: Stack) -> None:
    status = tdx_stack.status()
    assert status["platform"] == "sim-tdx" and status["simulated"] is True
    assert "SIMULATED" in tdx_stack.log()


def test_verify_and_fresh_evidence_with_the_tdx_verifier(tdx_stack: Stack, tmp_path: Path) -> None:
    policy = _policy(tdx_stack, tmp_path / "p.yaml")
    result = _ratls("verify", tdx_stack.url, "--policy", str(policy), "--fresh", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "pass" and doc["platform"] == "sim-tdx"
    names = {c["name"] for c in doc["checks"]}
    assert {"tdx.quote-signature", "tdx.qe-binding", "tdx.pck-chain", "tdx.collateral", "freshness.nonce",
            "policy.tdx.mrtd", "policy.tdx.tcb-status"} <= names
    assert doc["tcb"]["status"] == "UpToDate"


def test_wrong_mrtd_is_refused_before_any_request(tdx_stack: Stack, tmp_path: Path) -> None:
    policy = _policy(tdx_stack, tmp_path / "p.yaml", mrtd="00" * 48)
    before = inference_entries(tdx_stack)
    result = _ratls("curl", "--policy", str(policy), "--", "-s", "-H", "Content-Type: application/json",
                    "-d", INFER, f"{tdx_stack.url}/v2/models/add_sub/infer")
    assert result.returncode != 0
    assert "policy.tdx.mrtd" in result.stderr
    assert inference_entries(tdx_stack) == before  # curl never ran: no request reached the gateway


def test_tritonclient_and_curl_over_verified_tdx_tls(tdx_stack: Stack, tmp_path: Path) -> None:
    policy = _policy(tdx_stack, tmp_path / "p.yaml")
    http = http_client(tdx_stack.url, policy)
    assert http.infer("add_sub", add_sub_inputs(thttp, [1, 2], [3, 4])).as_numpy("OUTPUT0").tolist() == [4.0, 6.0]
    grpc = grpc_client(tdx_stack.url, policy)
    assert grpc.infer("add_sub", add_sub_inputs(tgrpc, [5], [2])).as_numpy("OUTPUT1").tolist() == [3.0]
    result = _ratls("curl", "--policy", str(policy), "--", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                    f"{tdx_stack.url}/v2/health/ready")
    assert result.returncode == 0 and result.stdout.strip() == "200", result.stderr
