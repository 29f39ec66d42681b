"""External mode against a real Triton the gateway did not start: started after the gateway
(compose and systemd start them side by side), killed and restarted under it, and replaced by
something that fails the hardening check."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from triton_backend.demo import demo_repository
from triton_backend.launch import TritonConfig, TritonProcess

from .stack import Stack, fetch_cert_pem, free_port, pinned_context, start_stack
from .test_filters import _CaptureTriton, get

pytestmark = pytest.mark.slow

INFER = json.dumps({"inputs": [
    {"name": "INPUT0", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]},
    {"name": "INPUT1", "shape": [4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}).encode()


def healthz(stack: Stack) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/healthz", timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_health(stack: Stack, status: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        code, body = healthz(stack)
        if code == status:
            return body
        time.sleep(0.3)
    raise AssertionError(f"healthz never returned {status}: {body}")


def triton(tmp: Path, http_port: int, grpc_port: int) -> TritonProcess:
    return TritonProcess(TritonConfig(demo_repository(), http_port=http_port, grpc_port=grpc_port,
                                      work_dir=tmp, die_with_parent=False))


def test_triton_started_after_the_gateway_and_restarted_under_it(sim_state: Path, tmp_path: Path) -> None:
    http_port, grpc_port = free_port(), free_port()
    server = triton(tmp_path / "t1", http_port, grpc_port)

    def late_start() -> None:
        time.sleep(4)  # the gateway is already waiting when Triton begins to load its models
        server.start()

    starter = threading.Thread(target=late_start)
    starter.start()
    stack = None
    try:
        stack = start_stack({"triton": {"mode": "external", "http_port": http_port, "grpc_port": grpc_port,
                                        "model_repository": str(demo_repository()), "ready_timeout": "90s"}},
                            sim_dir=sim_state)
        starter.join()
        assert "waiting for Triton" in stack.log()
        status, body = get(stack.port, "POST", "/v2/models/add_sub/infer", INFER)
        assert status == 200, body

        os.kill(server.proc.pid, signal.SIGKILL)  # Triton crashes under the gateway
        server.proc.wait(10)
        reasons = wait_health(stack, 503)["reasons"]
        assert any(r.startswith("upstream unavailable") for r in reasons), reasons
        server.stop()
        server = triton(tmp_path / "t2", http_port, grpc_port)
        server.start()
        server.wait_ready()
        wait_health(stack, 200)
        for _ in range(20):  # serving again, every request
            status, body = get(stack.port, "POST", "/v2/models/add_sub/infer", INFER)
            assert status == 200, body
    finally:
        starter.join()
        if stack is not None:
            stack.stop()
        server.stop()


def test_no_triton_within_ready_timeout_is_a_start_order_error(sim_state: Path, tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(RuntimeError) as err:
        start_stack({"triton": {"mode": "external", "http_port": port, "grpc_port": free_port(),
                                "model_repository": str(demo_repository()), "ready_timeout": "3s"}},
                    sim_dir=sim_state)
    text = str(err.value)
    assert "exited with 2" in text and "did not answer" in text and "within triton.ready_timeout (3s)" in text
    assert "on_exposed" not in text  # a start-order problem is not answered with "weaken security"


def test_stop_while_waiting_for_triton_is_prompt(sim_state: Path) -> None:
    """docker-compose stop/down gives 10 s before SIGKILL: a gateway waiting for Triton must not
    sit out its ready_timeout."""
    stack = start_stack({"triton": {"mode": "external", "http_port": free_port(), "grpc_port": free_port(),
                                    "model_repository": str(demo_repository()), "ready_timeout": "120s"}},
                        sim_dir=sim_state, wait=False)
    try:
        deadline = time.monotonic() + 30
        while "waiting for Triton" not in stack.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "waiting for Triton" in stack.log()
        started = time.monotonic()
        stack.proc.send_signal(signal.SIGTERM)
        assert stack.proc.wait(10) == 0
        assert time.monotonic() - started < 5
        assert "stop requested during start-up" in stack.log()
    finally:
        stack.stop()


def test_hold_on_refusal_idles_until_stopped(tmp_path: Path) -> None:
    """Under a container restart policy a refusal must not be retried forever: with
    --hold-on-refusal the gateway says why once and waits for SIGTERM (then exits 2)."""
    tsm = tmp_path / "configfs"  # no TSM provider: no TEE
    proc = subprocess.Popen([sys.executable, "-m", "ratls.cli", "serve", "--hold-on-refusal"],
                            env={**os.environ, "RATLS_GATEWAY__IDENTITY__TSM_ROOT": str(tsm),
                                 "RATLS_GATEWAY__CONTROL__RUN_DIR": str(tmp_path / "run"),
                                 "RATLS_GATEWAY__CONTROL__METRICS_PORT": str(free_port())},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(4)
        assert proc.poll() is None  # held, not exited
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 2
        assert out.count("no TEE detected") == 1 and "holding until stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_hold_on_refusal_still_exits_when_triton_is_late(sim_state: Path) -> None:
    """Triton not answering in time is a start-order problem: exit 2 so the restart policy
    tries again (a held gateway would never see Triton arrive)."""
    config = {"triton": {"mode": "external", "http_port": free_port(), "grpc_port": free_port(),
                         "model_repository": str(demo_repository()), "ready_timeout": "2s"}}
    stack = start_stack(config, sim_dir=sim_state, wait=False)
    stack.proc.wait(30)  # without the flag
    assert stack.proc.returncode == 2
    cmd = [sys.executable, "-m", "ratls.cli", "serve", "-c", str(stack.config_path), "--hold-on-refusal"]
    late = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=stack.workdir)
    assert late.returncode == 2 and "did not answer" in late.stderr and "holding" not in late.stderr


def curl_h2_status(stack: Stack) -> str:
    """curl over HTTP/2 with a 1 MiB body: the status it saw (its own exit status must be 0)."""
    body = stack.workdir / "body.json"
    body.write_bytes(b'{"inputs":[' + b" " * (1 << 20) + b"]}")
    done = subprocess.run(["curl", "-sS", "-k", "--http2", "-o", "/dev/null", "-w", "%{http_code}",
                           "-H", "Content-Type: application/json", "--data-binary", f"@{body}",
                           f"https://127.0.0.1:{stack.port}/v2/models/add_sub/infer"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def sdk_errors(stack: Stack) -> tuple[str, str]:
    """What tritonclient reports for one inference over HTTP (the error's message, which it
    parses from a JSON body) and over gRPC (the status code's name)."""
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp
    from tritonclient.utils import InferenceServerException

    from triton_backend.demo import add_sub_inputs

    pem = fetch_cert_pem(stack.port)
    ctx = pinned_context(pem)
    http = thttp.InferenceServerClient(f"127.0.0.1:{stack.port}", ssl=True, ssl_context_factory=lambda: ctx)
    with pytest.raises(InferenceServerException) as over_http:
        http.infer("add_sub", add_sub_inputs(thttp, [5], [3]))
    http.close()
    root = stack.workdir / "served.pem"
    root.write_text(pem)
    grpc = tgrpc.InferenceServerClient(f"127.0.0.1:{stack.port}", ssl=True, root_certificates=str(root),
                                       channel_args=[("grpc.ssl_target_name_override", "localhost")])
    with pytest.raises(InferenceServerException) as over_grpc:
        grpc.infer("add_sub", add_sub_inputs(tgrpc, [5], [3]))
    grpc.close()
    return over_http.value.message(), str(over_grpc.value.status()).removeprefix("StatusCode.")


class _ExplicitModeTriton(_CaptureTriton):
    """Answers like a Triton started with --model-control-mode=explicit."""

    inferences = 0

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.endswith("/infer"):
            type(self).inferences += 1
        self._reply(400, b'{"error":"failed to load \'ratls-hardening-probe-nonexistent\', failed to poll"}')


def test_triton_replaced_by_an_unhardened_one_is_not_served(sim_state: Path, tmp_path: Path) -> None:
    http_port, grpc_port = free_port(), free_port()
    server = triton(tmp_path / "t1", http_port, grpc_port)
    server.start()
    server.wait_ready()
    stack = None
    impostor = None
    try:
        stack = start_stack({"triton": {"mode": "external", "http_port": http_port, "grpc_port": grpc_port,
                                        "model_repository": str(demo_repository())}}, sim_dir=sim_state)
        # Gone at once (SIGKILL), not by a graceful stop: while Triton shuts down, one of its ports
        # can still answer with the other closed, and that half-stopped server rightly fails the
        # hardening check, which would make this outage read as a hardening refusal.
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.stop()
        wait_health(stack, 503)
        assert curl_h2_status(stack) == "503"
        # An outage, as the SDKs see it: Triton's JSON error shape over HTTP, UNAVAILABLE over gRPC.
        assert sdk_errors(stack) == ("the model server is unavailable or overloaded; retry later", "UNAVAILABLE")
        impostor = ThreadingHTTPServer(("127.0.0.1", http_port), _ExplicitModeTriton)
        threading.Thread(target=impostor.serve_forever, daemon=True).start()
        time.sleep(3)  # several upstream checks
        code, body = healthz(stack)
        assert code == 503
        assert any("model control 'explicit'" in r for r in body["reasons"]), body
        assert "failed the hardening check after reconnecting" in stack.log()
        # not only unready: Envoy forwards nothing to it
        status, data = get(stack.port, "POST", "/v2/models/add_sub/infer", INFER)
        assert status == 503 and b"content-type: application/json" in data.lower(), data
        assert sdk_errors(stack) == ("Triton failed the hardening check", "UNAVAILABLE")
        assert curl_h2_status(stack) == "503"  # a clean HTTP/2 reply, even to a request still uploading
        assert _ExplicitModeTriton.inferences == 0
        impostor.shutdown()
        impostor.server_close()
        impostor = None
        server = triton(tmp_path / "t2", http_port, grpc_port)  # the real one is back: served again
        server.start()
        server.wait_ready()
        wait_health(stack, 200)
        status, data = get(stack.port, "POST", "/v2/models/add_sub/infer", INFER)
        assert status == 200, data
    finally:
        if impostor is not None:
            impostor.shutdown()
            impostor.server_close()
        if stack is not None:
            stack.stop()
        server.stop()


def test_python_backend_models_served_from_the_measured_repository(sim_state: Path, tmp_path: Path) -> None:
    """An external Triton loading the very directory the gateway measured: its python backend
    writes __pycache__ there on load, which the gateway refuses (bytecode would run instead of
    the measured source); with README's blockers it writes none, and the gateway stays ready
    through a Triton restart."""
    import shutil

    repo = tmp_path / "models"
    shutil.copytree(demo_repository(), repo)
    http_port, grpc_port = free_port(), free_port()

    def external(work: str) -> TritonProcess:
        return TritonProcess(TritonConfig(repo, http_port=http_port, grpc_port=grpc_port, work_dir=tmp_path / work,
                                          snapshot=False, die_with_parent=False))

    config = {"triton": {"mode": "external", "http_port": http_port, "grpc_port": grpc_port,
                         "model_repository": str(repo)}}
    server = external("t0")
    server.start()
    server.wait_ready()
    server.stop()
    written = sorted(str(p.relative_to(repo)) for p in repo.rglob("__pycache__") if p.is_dir())
    assert written, "Triton's python backend wrote no bytecode: this test shows nothing"
    refused = start_stack(config, sim_dir=sim_state, wait=False)
    assert refused.proc.wait(60) == 2
    assert "holds compiled bytecode" in refused.log() and "block-bytecode" in refused.log()

    for directory in written:
        shutil.rmtree(repo / directory)
    blocked = subprocess.run([sys.executable, "-m", "triton_backend", "block-bytecode", str(repo)],
                             capture_output=True, text=True)
    assert blocked.returncode == 0 and "the manifest is unchanged" in blocked.stdout, blocked.stderr
    server = external("t1")
    server.start()
    server.wait_ready()
    stack = None
    try:
        stack = start_stack(config, sim_dir=sim_state)
        assert get(stack.port, "POST", "/v2/models/add_sub/infer", INFER)[0] == 200
        server.stop()
        server = external("t2")  # restarted under the gateway: loads the models again
        server.start()
        server.wait_ready()
        wait_health(stack, 200)
        time.sleep(2)  # a few repository checks (watch_interval 1s)
        code, body = healthz(stack)
        assert code == 200, body
        assert get(stack.port, "POST", "/v2/models/add_sub/infer", INFER)[0] == 200
        assert not [p for p in repo.rglob("__pycache__") if p.is_dir()]
    finally:
        if stack is not None:
            stack.stop()
        server.stop()
