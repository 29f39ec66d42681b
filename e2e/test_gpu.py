"""A gateway attesting two simulated NVIDIA GPUs beside the simulated CPU, on the real stack:
every client path (ratls verify, curl, grpcurl, the proxy with unmodified tritonclient, the SDK)
accepts it under a policy pinning the GPUs, and refuses - before a request reaches Triton - a
policy pinning another VBIOS or driver, a certificate whose GPU record was lifted from another
certificate, and a certificate without GPU evidence when the policy requires it. The forged
certificates are presented by mitmproxy in front of the real gateway."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
import yaml

from ratls.cert import generate_key, load_x509, parse_ratls
from ratls.client.triton import grpc_client, http_client
from ratls.devices import CollectedDevice
from ratls.errors import PolicyViolation
from ratls.issue import collect_devices, issue_certificate, make_claims
from ratls.platforms.nvidia.collector import SimGpuCollector
from ratls.platforms.nvidia.sim import load_or_create, sim_gpu_dir
from ratls.platforms.sim.chain import load_chain
from ratls.platforms.sim.platform import SimPlatform
from triton_backend.launch import wait_for_port

from .stack import Stack, fetch_cert_pem, free_port, start_stack
from .test_clients import GRPC_INFER, INFER, RATLS, ProxyThread, _mitmdump, add_sub_inputs, inference_entries, run

pytestmark = pytest.mark.slow
GPUS = 2


@pytest.fixture(scope="module")
def gpu_stack(sim_state: Path) -> Iterator[Stack]:
    s = start_stack({"gpus": {"mode": "sim", "count": GPUS}}, sim_dir=sim_state)
    yield s
    assert s.stop() == 0, s.log()[-3000:]


@pytest.fixture(scope="module")
def gpu_policies(gpu_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    chain = load_chain(gpu_stack.sim_dir)
    roots, section = load_or_create(sim_gpu_dir(gpu_stack.sim_dir)).reference_policy(GPUS)
    claims = parse_ratls(load_x509(fetch_cert_pem(gpu_stack.port).encode())).claims
    good = {"version": 1, "platforms": [], "allow_simulated": True,
            "simulated": {"root_sha256": [chain.root_sha256, *roots]},
            "sev-snp": {"measurements": [chain.measurement.hex()]}, "nvidia-gpu": section,
            "claims": {"models": claims.models["models"], "config": claims.config, "max_age": "1h"}}
    d = tmp_path_factory.mktemp("gpu-policies")
    out = {}
    for name, gpu in (("good", {}), ("other-vbios", {"vbios_versions": ["96.00.74.00.20"]}),
                      ("other-driver", {"driver_versions": ["550.90.07"]})):
        path = d / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**good, "nvidia-gpu": {**section, **gpu}}))
        out[name] = path
    return out


class Replay:
    """A collector answering with GPU evidence made for another certificate, whatever it is asked."""

    def __init__(self, devices: list[CollectedDevice]) -> None:
        self.devices = devices

    def collect(self, nonce_for: Callable[[str], bytes]) -> list[CollectedDevice]:
        return self.devices


def _forged(stack: Stack, workdir: Path, kind: str) -> Path:
    """A certificate on the same simulated CPU with the gateway's own models and config claims,
    whose GPUs were lifted from another certificate ("lifted") or are missing ("no-gpu")."""
    from cryptography.hazmat.primitives import serialization
    real = parse_ratls(load_x509(fetch_cert_pem(stack.port).encode()))
    now = dt.datetime.now(dt.UTC)
    devices = None
    if kind == "lifted":
        other = make_claims(generate_key(), platform="sim", now=now, lifetime=dt.timedelta(hours=1),
                            instance=b"o" * 16)
        devices = Replay(collect_devices(SimGpuCollector(sim_gpu_dir(stack.sim_dir), GPUS), other)[1])
    key = generate_key()
    issued = issue_certificate(SimPlatform(state_dir=stack.sim_dir), key, now=now, sans=real.sans(),
                               models=real.claims.models, config=real.claims.config, devices=devices)
    path = workdir / f"{kind}.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()) + issued.cert.public_bytes(
        serialization.Encoding.PEM))
    return path


@pytest.fixture(params=["lifted", "no-gpu"])
def forged(request: pytest.FixtureRequest, gpu_stack: Stack, tmp_path: Path) -> Iterator[tuple[str, str]]:
    port = free_port()
    proc = subprocess.Popen([_mitmdump(), "--mode", f"reverse:https://127.0.0.1:{gpu_stack.port}", "--listen-host",
                             "127.0.0.1", "--listen-port", str(port), "--ssl-insecure", "--set",
                             f"confdir={tmp_path / 'mitm'}", "-q", "--certs",
                             f"*={_forged(gpu_stack, tmp_path, request.param)}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_port(port)
    yield request.param, f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def every_client_path(target: str, policy: Path) -> dict[str, bool]:
    """Which client paths went through (True) to an inference answer."""
    results: dict[str, bool] = {}
    curl = run([*RATLS, "curl", "--policy", str(policy), "--", "-sS", "-d", INFER,
                f"https://{target}/v2/models/add_sub/infer"])
    results["curl"] = curl.returncode == 0 and '"data":[8.0]' in curl.stdout
    grpcurl = run([*RATLS, "grpcurl", "--policy", str(policy), "--", "-d", GRPC_INFER, target,
                   "inference.GRPCInferenceService/ModelInfer"])
    results["grpcurl"] = grpcurl.returncode == 0 and "raw_output_contents" in grpcurl.stdout
    for name, make, module in (("sdk-http", http_client, thttp), ("sdk-grpc", grpc_client, tgrpc)):
        try:
            client = make(f"https://{target}", str(policy))
            results[name] = client.infer("add_sub", add_sub_inputs(module)).as_numpy("OUTPUT0").tolist() == [8.0]
        except PolicyViolation:
            results[name] = False
    proxy = ProxyThread(target, policy)
    try:
        results["proxy"] = thttp.InferenceServerClient(proxy.address).infer(
            "add_sub", add_sub_inputs(thttp)).as_numpy("OUTPUT0").tolist() == [8.0]
    except Exception:  # noqa: BLE001 - the proxy refused and closed the connection
        results["proxy"] = False
    finally:
        proxy.stop()
    return results


def verdict(target: str, policy: Path) -> tuple[int, list[str]]:
    done = run([*RATLS, "verify", f"https://{target}", "--policy", str(policy), "--json"])
    return done.returncode, json.loads(done.stdout)["failures"] if done.stdout.startswith("{") else []


def test_every_client_path_accepts_the_attested_gpus(gpu_stack: Stack, gpu_policies: dict[str, Path]) -> None:
    target = f"127.0.0.1:{gpu_stack.port}"
    assert verdict(target, gpu_policies["good"]) == (0, [])
    assert every_client_path(target, gpu_policies["good"]) == dict.fromkeys(
        ("curl", "grpcurl", "sdk-http", "sdk-grpc", "proxy"), True)
    fresh = run([*RATLS, "verify", gpu_stack.url, "--policy", str(gpu_policies["good"]), "--fresh", "--json"])
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    doc = json.loads(fresh.stdout)
    assert set(doc["devices"]) == {"gpu0", "gpu1"} and doc["fresh"] is True
    status = gpu_stack.status()
    assert status["gpus"]["attested"] == GPUS and status["gpus"]["ready_state_set"] is True
    assert "ratls_gpus_attested 2" in gpu_stack.metrics()


@pytest.mark.parametrize(("policy", "failed"), [("other-vbios", "vbios"), ("other-driver", "driver")])
def test_every_client_path_refuses_another_gpu_firmware(gpu_stack: Stack, gpu_policies: dict[str, Path],
                                                        policy: str, failed: str) -> None:
    target = f"127.0.0.1:{gpu_stack.port}"
    before = inference_entries(gpu_stack)
    code, failures = verdict(target, gpu_policies[policy])
    assert code == 1 and failures == [f"policy.nvidia-gpu.gpu{i}.{failed}" for i in range(GPUS)]
    assert not any(every_client_path(target, gpu_policies[policy]).values())
    assert inference_entries(gpu_stack) == before, "a request reached Triton"


def test_every_client_path_refuses_forged_gpu_evidence(forged: tuple[str, str], gpu_stack: Stack,
                                                       gpu_policies: dict[str, Path]) -> None:
    kind, target = forged
    before = inference_entries(gpu_stack)
    code, failures = verdict(target, gpu_policies["good"])
    expected = ["gpu0.nonce", "gpu1.nonce"] if kind == "lifted" else ["policy.nvidia-gpu.required"]
    assert code == 1 and failures == expected
    assert not any(every_client_path(target, gpu_policies["good"]).values())
    assert inference_entries(gpu_stack) == before, "a request crossed the interposer"
