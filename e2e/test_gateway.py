"""The real stack: Triton + Envoy + control plane, reached by real clients through one port."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from triton_backend.demo import add_sub_inputs, repeat_inputs

from .stack import Stack, fetch_cert_pem, pinned_context

pytestmark = pytest.mark.slow


def http_client(stack: Stack) -> thttp.InferenceServerClient:
    ctx = pinned_context(fetch_cert_pem(stack.port))
    return thttp.InferenceServerClient(f"127.0.0.1:{stack.port}", ssl=True, ssl_context_factory=lambda: ctx)


def grpc_client(stack: Stack) -> tgrpc.InferenceServerClient:
    # tritonclient reads root_certificates from a file path
    pem_path = stack.workdir / f"served-{time.monotonic_ns()}.pem"
    pem_path.write_text(fetch_cert_pem(stack.port))
    return tgrpc.InferenceServerClient(f"127.0.0.1:{stack.port}", ssl=True, root_certificates=str(pem_path),
                                       channel_args=[("grpc.ssl_target_name_override", "localhost")])


def test_rest_and_grpc_through_one_port(stack: Stack) -> None:
    http = http_client(stack)
    assert http.is_server_ready()
    out = http.infer("add_sub", add_sub_inputs(thttp, [1, 2], [3, 4]))
    assert out.as_numpy("OUTPUT0").tolist() == [4.0, 6.0]
    grpc = grpc_client(stack)
    assert grpc.is_server_live()
    out = grpc.infer("add_sub", add_sub_inputs(tgrpc, [10], [1]))
    assert out.as_numpy("OUTPUT1").tolist() == [9.0]
    text = tgrpc.InferInput("TEXT", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"attested"], dtype=np.object_))
    assert grpc.infer("text_transform", [text]).as_numpy("UPPER").tolist() == [b"ATTESTED"]


def test_served_certificate_passes_ratls_verify(stack: Stack, sim_policy: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "ratls.cli", "verify", stack.url, "--policy", str(sim_policy),
                             "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "pass" and doc["simulated"] is True
    manifest = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{stack.url}/.well-known/ratls/manifest"), context=pinned_context(fetch_cert_pem(stack.port))).read())
    import hashlib

    from triton_backend.manifest import canonical_json
    assert doc["claims"]["models"]["manifest"] == "sha256:" + hashlib.sha256(canonical_json(manifest)).hexdigest()
    assert set(doc["claims"]["models"]["models"]) == {"add_sub", "text_transform", "repeat"}


def test_evidence_api(stack: Stack) -> None:
    ctx = pinned_context(fetch_cert_pem(stack.port))
    cert = json.loads(urllib.request.urlopen(f"{stack.url}/.well-known/ratls/certificate", context=ctx).read())
    assert cert["profile"] == "ratls/1" and cert["simulated"] is True
    nonce = "ab" * 16
    fresh = json.loads(urllib.request.urlopen(f"{stack.url}/.well-known/ratls/evidence?nonce={nonce}",
                                              context=ctx).read())
    import base64

    from ratls.claims import decode_claims
    from ratls.cmw import decode_collection
    collection = decode_collection(base64.b64decode(fresh["evidence"]))
    claims = decode_claims(collection.record("claims").value)
    assert claims.nonce == bytes.fromhex(nonce)
    assert claims.pubkey_sha256.hex() == cert["pubkey_sha256"]
    req = urllib.request.Request(f"{stack.url}/.well-known/ratls/evidence?nonce=zz")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, context=ctx)
    assert info.value.code == 400
    cbor_req = urllib.request.Request(f"{stack.url}/.well-known/ratls/certificate",
                                      headers={"Accept": "application/cbor"})
    with urllib.request.urlopen(cbor_req, context=ctx) as resp:
        assert resp.headers.get_content_type() == "application/cbor"


def test_grpcurl_lists_services_via_reflection(stack: Stack, tmp_path: Path) -> None:
    grpcurl = Path(sys.executable).parent / "grpcurl"
    cert = tmp_path / "cert.pem"
    cert.write_text(fetch_cert_pem(stack.port))
    result = subprocess.run([str(grpcurl), "-cacert", str(cert), "-authority", "localhost",
                             f"127.0.0.1:{stack.port}", "list"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    services = result.stdout.split()
    assert "inference.GRPCInferenceService" in services and "grpc.health.v1.Health" in services
    described = subprocess.run([str(grpcurl), "-cacert", str(cert), "-authority", "localhost",
                                f"127.0.0.1:{stack.port}", "describe", "inference.GRPCInferenceService.ModelInfer"],
                               capture_output=True, text=True, timeout=60)
    assert described.returncode == 0 and "ModelInferRequest" in described.stdout
    call = subprocess.run([str(grpcurl), "-cacert", str(cert), "-authority", "localhost",
                           f"127.0.0.1:{stack.port}", "inference.GRPCInferenceService/ServerLive"],
                          capture_output=True, text=True, timeout=60)
    assert call.returncode == 0 and '"live": true' in call.stdout


def test_streaming_is_not_buffered(stack: Stack) -> None:
    received: queue.Queue = queue.Queue()
    client = grpc_client(stack)
    client.start_stream(callback=lambda result, error: received.put((time.monotonic(), result, error)))
    client.async_stream_infer("repeat", repeat_inputs(tgrpc, 20, b"chunk"))
    arrivals = []
    for _ in range(20):
        t, result, error = received.get(timeout=30)
        assert error is None
        arrivals.append((t, int(result.as_numpy("INDEX")[0])))
    client.stop_stream()
    assert [i for _, i in arrivals] == list(range(20))
    # The model sleeps 10 ms between chunks: a buffering proxy would deliver them in one burst.
    assert arrivals[-1][0] - arrivals[0][0] > 0.1


def test_health_and_metrics(stack: Stack) -> None:
    ctx = pinned_context(fetch_cert_pem(stack.port))
    health = json.loads(urllib.request.urlopen(f"{stack.url}/healthz", context=ctx).read())
    assert health == {"status": "ready"}
    metrics = stack.metrics()
    for series in ("ratls_ready 1", "ratls_simulated 1", "ratls_upstream_ready 1",
                   "ratls_certificate_expiry_timestamp_seconds", 'ratls_xds_nacks_total{type="Listener"} 0',
                   "envoy_server_live"):
        assert series in metrics, series
    # Triton's own series, for the dashboards built on them (its port is private to the gateway)
    http_client(stack).infer("add_sub", add_sub_inputs(thttp, [1], [2]))
    assert 'nv_inference_request_success{model="add_sub",version="1"}' in stack.metrics()
    status = stack.status()
    assert status["ready"] and status["xds"]["Secret"]["acked_version"] == status["xds_version"]
    assert "PRIVATE KEY" not in stack.log()


def test_second_gateway_on_a_taken_port_is_refused(stack: Stack) -> None:
    """Two gateways on one port would split clients between two certificates: the second one
    refuses to start, and Envoy's listener cannot be joined through SO_REUSEPORT either."""
    import socket

    from .stack import start_stack, terminate

    before = fetch_cert_pem(stack.port)
    for key, override in (("listen", {"listen": {"port": stack.port}}),
                          ("control.metrics", {"control": {"metrics_port": stack.metrics_port}})):
        second = start_stack(override, sim_dir=stack.sim_dir, wait=False)
        try:
            assert second.proc.wait(60) == 2, second.log()[-2000:]
        finally:
            terminate(second.proc)
        log = second.log()
        assert f"{key}: port" in log and "already in use by another process" in log, log[-2000:]
        assert "ss -ltnp" in log
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with pytest.raises(OSError, match="in use"):
            sock.bind(("127.0.0.1", stack.port))
    assert fetch_cert_pem(stack.port) == before  # the first gateway served on, alone
