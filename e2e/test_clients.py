"""Every client path verifies before sending a byte: curl, grpcurl, the local proxy with
unmodified tritonclient, and the SDK - against the real gateway, wrong policies, and a
mitmproxy man in the middle."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
import yaml

from ratls.client.fetch import parse_target
from ratls.client.proxy import VerifyingProxy
from ratls.client.triton import grpc_client, http_client
from ratls.errors import PolicyViolation
from ratls.policy import load_policy
from triton_backend.demo import add_sub_inputs as demo_inputs
from triton_backend.launch import wait_for_port

from .stack import Stack, free_port, start_stack

pytestmark = pytest.mark.slow
RATLS = [sys.executable, "-m", "ratls.cli"]
INFER = json.dumps({"inputs": [
    {"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [5]},
    {"name": "INPUT1", "shape": [1], "datatype": "FP32", "data": [3]}]})
GRPC_INFER = json.dumps({"model_name": "add_sub", "inputs": [
    {"name": "INPUT0", "datatype": "FP32", "shape": [1], "contents": {"fp32_contents": [5]}},
    {"name": "INPUT1", "datatype": "FP32", "shape": [1], "contents": {"fp32_contents": [3]}}]})


def _write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def policies(stack: Stack, sim_policy: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = yaml.safe_load(sim_policy.read_text())
    status = stack.status()
    manifest = json.loads(subprocess.run([sys.executable, "-m", "triton_backend", "manifest",
                                          str(Path(__file__).resolve().parents[1] / "triton_backend/demo_models")],
                                         capture_output=True, text=True, check=True).stdout)
    d = tmp_path_factory.mktemp("policies")
    good = dict(base, claims={"models": manifest["models"], "config": status["config_digest"], "max_age": "1h"})
    out = {"good": _write(d / "good.yaml", good)}
    out["wrong-measurement"] = _write(d / "m.yaml", dict(good, **{"sev-snp": dict(base["sev-snp"],
                                                                              measurements=["00" * 48])}))
    out["simulation-not-allowed"] = _write(d / "s.yaml", {k: v for k, v in good.items()
                                                         if k not in ("allow_simulated", "simulated")}
                                           | {"platforms": ["sev-snp"]})
    out["wrong-model"] = _write(d / "w.yaml", dict(good, claims=dict(good["claims"], models={
        "add_sub": "sha256:" + "1" * 64})))
    out["wrong-config"] = _write(d / "c.yaml", dict(good, claims=dict(good["claims"], config="sha256:" + "2" * 64)))
    return out


BAD = ["wrong-measurement", "simulation-not-allowed", "wrong-model", "wrong-config"]


def inference_entries(stack: Stack) -> int:
    """Inference requests the gateway has logged, once the log stopped growing (Envoy flushes
    its access log on a one-second timer)."""
    path = stack.workdir / "run" / "access.log"

    def count() -> int:
        if not path.exists():
            return 0
        return sum(1 for line in path.read_text().splitlines() if '"route":"inference:' in line)

    previous = count()
    while True:
        time.sleep(1.5)
        current = count()
        if current == previous:
            return current
        previous = current


def run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def test_curl(stack: Stack, policies: dict[str, Path]) -> None:
    curl_args = ["-sS", "-H", "Content-Type: application/json", "-d", INFER, f"{stack.url}/v2/models/add_sub/infer"]
    ok = run([*RATLS, "curl", "--policy", str(policies["good"]), "--", *curl_args])
    assert ok.returncode == 0 and '"data":[8.0]' in ok.stdout, ok.stderr
    for name in BAD:
        before = inference_entries(stack)
        bad = run([*RATLS, "curl", "--policy", str(policies[name]), "--", *curl_args])
        assert bad.returncode == 1 and "refusing" in bad.stderr, (name, bad.stderr)
        assert inference_entries(stack) == before, f"{name}: a request reached the gateway"
    pin = run([*RATLS, "pin", stack.url, "--policy", str(policies["good"])])
    assert pin.returncode == 0 and pin.stdout.startswith("sha256//")
    # curl's own exit code passes through (22: HTTP error with --fail)
    missing = run([*RATLS, "curl", "--policy", str(policies["good"]), "--", "-sS", "--fail",
                   f"{stack.url}/v2/models/nope/ready"])
    assert missing.returncode == 22


def test_grpcurl(stack: Stack, policies: dict[str, Path]) -> None:
    target = f"127.0.0.1:{stack.port}"
    ok = run([*RATLS, "grpcurl", "--policy", str(policies["good"]), "--", "-d", GRPC_INFER, target,
              "inference.GRPCInferenceService/ModelInfer"])
    assert ok.returncode == 0 and "raw_output_contents" in ok.stdout, ok.stderr
    listed = run([*RATLS, "grpcurl", "--policy", str(policies["good"]), "--", target, "list"])
    assert "inference.GRPCInferenceService" in listed.stdout
    for name in BAD:
        before = inference_entries(stack)
        bad = run([*RATLS, "grpcurl", "--policy", str(policies[name]), "--", "-d", GRPC_INFER, target,
                   "inference.GRPCInferenceService/ModelInfer"])
        assert bad.returncode == 1, (name, bad.stderr)
        assert inference_entries(stack) == before


def test_fresh_evidence(stack: Stack, policies: dict[str, Path]) -> None:
    ok = run([*RATLS, "verify", stack.url, "--policy", str(policies["good"]), "--fresh", "--json"])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["fresh"] is True and any(c["name"] == "freshness.nonce" and c["ok"] for c in doc["checks"])


class ProxyThread:
    def __init__(self, target: str, policy: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.proxy = VerifyingProxy("127.0.0.1", 0, parse_target(target), load_policy(policy))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(10)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.proxy.listen_port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def add_sub_inputs(module):  # type: ignore[no-untyped-def]
    return demo_inputs(module, [5], [3])


LARGE_ELEMENTS = 1_200_000  # FP32: 4.8 MB per tensor, 9.6 MB per request and per response


def large_add_sub_inputs(module):  # type: ignore[no-untyped-def]
    return demo_inputs(module, [5.0] * LARGE_ELEMENTS, [3.0] * LARGE_ELEMENTS)


def test_proxy_with_unmodified_tritonclient(stack: Stack, policies: dict[str, Path]) -> None:
    good = ProxyThread(f"127.0.0.1:{stack.port}", policies["good"])
    try:
        http = thttp.InferenceServerClient(good.address)  # plain HTTP to the local proxy
        assert http.infer("add_sub", add_sub_inputs(thttp)).as_numpy("OUTPUT0").tolist() == [8.0]
        grpc = tgrpc.InferenceServerClient(good.address)  # h2c with prior knowledge
        assert grpc.infer("add_sub", add_sub_inputs(tgrpc)).as_numpy("OUTPUT0").tolist() == [8.0]
        curl = run(["curl", "-sS", f"http://{good.address}/v2/health/ready", "-o", "/dev/null", "-w", "%{http_code}"])
        assert curl.stdout == "200"
        assert good.proxy.stats.verified == 1 and good.proxy.stats.cache_hits >= 2
    finally:
        good.stop()
    for name in BAD:
        before = inference_entries(stack)
        bad = ProxyThread(f"127.0.0.1:{stack.port}", policies[name])
        try:
            with pytest.raises(Exception):  # noqa: B017 - any client error: the proxy closed the connection
                thttp.InferenceServerClient(bad.address).infer("add_sub", add_sub_inputs(thttp))
            assert bad.proxy.stats.refused >= 1 and bad.proxy.last_refusal is not None
        finally:
            bad.stop()
        assert inference_entries(stack) == before


def test_sdk(stack: Stack, policies: dict[str, Path]) -> None:
    http = http_client(stack.url, policies["good"])
    assert http.infer("add_sub", add_sub_inputs(thttp)).as_numpy("OUTPUT0").tolist() == [8.0]
    grpc = grpc_client(stack.url, policies["good"])
    assert grpc.infer("add_sub", add_sub_inputs(tgrpc)).as_numpy("OUTPUT1").tolist() == [2.0]
    for name in BAD:
        before = inference_entries(stack)
        with pytest.raises(PolicyViolation):
            http_client(stack.url, policies[name])
        with pytest.raises(PolicyViolation):
            grpc_client(stack.url, policies[name])
        assert inference_entries(stack) == before


def _mitmdump() -> str:
    path = os.environ.get("RATLS_MITMDUMP") or shutil.which("mitmdump")
    local = Path(__file__).resolve().parents[1] / ".venv-mitm" / "bin" / "mitmdump"
    if not path and local.exists():
        path = str(local)
    if not path:
        pytest.fail("mitmdump not found: run the tests through 'make test' (it installs mitmproxy in .venv-mitm)")
    return path


def _forged_pem(stack: Stack, workdir: Path) -> Path:
    """The gateway's real certificate extension (evidence) in a certificate for the attacker's key."""
    import socket
    import ssl

    from cryptography.hazmat.primitives import serialization

    from ratls.cert import BACKDATE, build_certificate, generate_key, load_x509, parse_ratls
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", stack.port)) as s, ctx.wrap_socket(s) as t:
        real = parse_ratls(load_x509(t.getpeercert(binary_form=True)))
    key = generate_key()
    cert = build_certificate(key, real.claims_cbor, real.evidence, not_before=real.cert.not_valid_before_utc,
                             not_after=real.cert.not_valid_after_utc, common_name="ratls-gateway",
                             sans=real.sans())
    assert BACKDATE
    path = workdir / "forged.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(params=["own-certificate", "forwarded-evidence"])
def mitm(request: pytest.FixtureRequest, stack: Stack, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    args = [_mitmdump(), "--mode", f"reverse:https://127.0.0.1:{stack.port}", "--listen-host", "127.0.0.1",
            "--listen-port", str(port), "--ssl-insecure", "--set", f"confdir={tmp_path / 'mitm'}", "-q"]
    if request.param == "forwarded-evidence":
        args += ["--certs", f"*={_forged_pem(stack, tmp_path)}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_port(port)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def test_mitm_is_refused_by_every_client_path(mitm: str, stack: Stack, policies: dict[str, Path]) -> None:
    good = str(policies["good"])
    before = inference_entries(stack)
    curl = run([*RATLS, "curl", "--policy", good, "--", "-sS", "-d", INFER, f"https://{mitm}/v2/models/add_sub/infer"])
    assert curl.returncode == 1
    grpcurl = run([*RATLS, "grpcurl", "--policy", good, "--", "-d", GRPC_INFER, mitm,
                   "inference.GRPCInferenceService/ModelInfer"])
    assert grpcurl.returncode == 1
    with pytest.raises(PolicyViolation):
        http_client(f"https://{mitm}", good)
    with pytest.raises(PolicyViolation):
        grpc_client(f"https://{mitm}", good)
    proxy = ProxyThread(mitm, policies["good"])
    try:
        with pytest.raises(Exception):  # noqa: B017
            thttp.InferenceServerClient(proxy.address).infer("add_sub", add_sub_inputs(thttp))
        assert proxy.proxy.stats.refused >= 1
    finally:
        proxy.stop()
    assert inference_entries(stack) == before, "a request crossed the man in the middle"
    # And mitmproxy really was in the path: without verification it would have been served.
    import ssl
    import urllib.request
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    assert urllib.request.urlopen(f"https://{mitm}/v2/health/ready", context=ctx).status == 200


def test_rotation_survived_by_sdk_and_proxy(sim_state: Path, policies: dict[str, Path], tmp_path: Path) -> None:
    # Short downstream idle timeout: Envoy closes idle connections, so clients reconnect and
    # meet each rotated certificate.
    s = start_stack({"filters": {"limits": {"idle_timeout": "1s", "per_client_rate_limit": None}}},
                    sim_dir=sim_state)
    try:
        base = yaml.safe_load(policies["good"].read_text())
        base["claims"]["config"] = s.status()["config_digest"]
        policy = _write(tmp_path / "p.yaml", base)
        sdk = http_client(s.url, policy)
        sdk_grpc = grpc_client(s.url, policy)
        # A caller's own channel options stay in force on every client rebuilt after a rotation.
        sdk_grpc_small = grpc_client(s.url, policy, channel_args=[("grpc.max_receive_message_length", 1 << 20)])
        proxy = ProxyThread(f"127.0.0.1:{s.port}", policy)
        failures, ok = [], 0
        try:
            for round_ in range(4):
                # 9.6 MB in and out: above gRPC's 4 MiB default, within tritonclient's 2 GiB.
                big = sdk_grpc.infer("add_sub", large_add_sub_inputs(tgrpc))
                assert big.as_numpy("OUTPUT0").nbytes == LARGE_ELEMENTS * 4
                assert float(big.as_numpy("OUTPUT0")[-1]) == 8.0
                with pytest.raises(Exception, match="RESOURCE_EXHAUSTED|larger than max"):
                    sdk_grpc_small.infer("add_sub", large_add_sub_inputs(tgrpc))
                for _ in range(5):
                    try:
                        assert sdk.infer("add_sub", add_sub_inputs(thttp)).as_numpy("OUTPUT0").tolist() == [8.0]
                        assert sdk_grpc.infer("add_sub", add_sub_inputs(tgrpc)).as_numpy("OUTPUT0").tolist() == [8.0]
                        via_proxy = thttp.InferenceServerClient(proxy.address)
                        assert via_proxy.infer("add_sub", add_sub_inputs(thttp)).as_numpy("OUTPUT0").tolist() == [8.0]
                        via_proxy.close()
                        ok += 3
                    except Exception as exc:  # noqa: BLE001 - counted
                        failures.append(repr(exc))
                s.admin("/admin/rotate")
                time.sleep(1.5)  # let Envoy drop the idle connections
            assert failures == [] and ok == 60
            assert sdk.reverifications >= 3
            assert sdk_grpc.reverifications >= 3 and sdk_grpc_small.reverifications >= 3
            assert proxy.proxy.stats.verified >= 4
        finally:
            proxy.stop()
    finally:
        s.stop()
