"""The real bundled tritonserver: start, reach over HTTP and gRPC, stop; and every failure."""

from __future__ import annotations

import os
import shutil
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from ratls.errors import ConfigError, RatlsError
from triton_backend.demo import add_sub_inputs, demo_repository, repeat_inputs
from triton_backend.launch import (
    TritonConfig,
    TritonCrashed,
    TritonError,
    TritonLaunchError,
    TritonProcess,
    free_port,
)
from triton_backend.locate import TritonNotFound, locate

pytestmark = pytest.mark.slow


def test_http_and_grpc_inference(triton: TritonProcess) -> None:
    http = thttp.InferenceServerClient(triton.http_url.removeprefix("http://"))
    assert http.is_server_ready() and http.is_model_ready("add_sub")
    result = http.infer("add_sub", add_sub_inputs(thttp, [1, 2, 3], [0.5, 0.5, 0.5]))
    assert result.as_numpy("OUTPUT0").tolist() == [1.5, 2.5, 3.5]
    assert result.as_numpy("OUTPUT1").tolist() == [0.5, 1.5, 2.5]
    grpc = tgrpc.InferenceServerClient(triton.grpc_target)
    result = grpc.infer("add_sub", add_sub_inputs(tgrpc, [4], [1]))
    assert result.as_numpy("OUTPUT0").tolist() == [5.0]
    text = thttp.InferInput("TEXT", [2], "BYTES")
    text.set_data_from_numpy(np.array(["héllo".encode(), b"ratls"], dtype=np.object_))
    out = http.infer("text_transform", [text])
    assert out.as_numpy("UPPER").tolist() == ["HÉLLO".encode(), b"RATLS"]
    assert out.as_numpy("LENGTH").tolist() == [6, 5]


def test_decoupled_streaming(triton: TritonProcess) -> None:
    import queue

    received: queue.Queue = queue.Queue()
    client = tgrpc.InferenceServerClient(triton.grpc_target)
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    client.async_stream_infer("repeat", repeat_inputs(tgrpc, 5, b"tick"), enable_empty_final_response=True)
    indexes = []
    while True:
        result, error = received.get(timeout=30)
        assert error is None
        response = result.get_response()
        if response.parameters.get("triton_final_response") and response.parameters[
                "triton_final_response"].bool_param and not response.outputs:
            break
        indexes.append(int(result.as_numpy("INDEX")[0]))
    client.stop_stream()
    assert indexes == [0, 1, 2, 3, 4]


def test_hardened_command_line(triton: TritonProcess) -> None:
    cmd = " ".join(triton.command(None))
    for flag in ("--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
                 "--model-control-mode=none", "--strict-readiness=true", "--exit-on-error=true",
                 "--disable-auto-complete-config", "--trace-config=level=OFF"):
        assert flag in cmd
    assert locate().source in ("pytriton-wheel", "PATH", "ngc")


def test_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(TritonNotFound, match="does not exist"):
        TritonProcess(TritonConfig(demo_repository(), binary=str(tmp_path / "tritonserver"))).start()


def test_busy_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(TritonLaunchError, match=f"http port {port} on 127.0.0.1 is already in use"):
            TritonProcess(TritonConfig(demo_repository(), http_port=port)).start()


def test_broken_model_reports_log_tail(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(demo_repository() / "add_sub", repo / "add_sub")
    (repo / "add_sub" / "1" / "model.py").write_text("raise RuntimeError('deliberately broken model')\n")
    proc = TritonProcess(TritonConfig(repo, ready_timeout=60))
    with pytest.raises(TritonCrashed) as info:
        with proc:
            pass
    assert "deliberately broken model" in str(info.value)
    assert not proc.running


def test_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(TritonLaunchError, match="not a directory"):
        TritonProcess(TritonConfig(tmp_path / "nope")).start()


def test_triton_errors_are_config_errors_with_a_hint(tmp_path: Path) -> None:
    # Inside the project's error tree: `ratls serve` and the admin API report them (exit 2, 409)
    # with the message and what to do, as they do every other operator-side problem.
    with pytest.raises(ConfigError) as info:
        TritonProcess(TritonConfig(tmp_path / "nope")).start()
    assert isinstance(info.value, TritonError) and isinstance(info.value, RatlsError)
    assert "triton.model_repository" in (info.value.hint or "")
    with pytest.raises(ConfigError) as missing:
        locate(tmp_path / "tritonserver")
    assert isinstance(missing.value, TritonNotFound) and "triton.binary" in (missing.value.hint or "")


def test_crash_is_reported_with_log_tail() -> None:
    proc = TritonProcess(TritonConfig(demo_repository()))
    with proc:
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.proc.wait(10)
        with pytest.raises(TritonCrashed, match=r"exited with code -9; last log lines"):
            proc.check_alive()
    assert not proc.running


def test_clean_stop_leaves_no_process() -> None:
    proc = TritonProcess(TritonConfig(demo_repository(), http_port=free_port()))
    with proc:
        pid = proc.pid
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_triton_leaves_the_repository_unchanged(tmp_path: Path) -> None:
    from triton_backend.manifest import build_manifest

    repo = tmp_path / "repo"
    shutil.copytree(demo_repository(), repo)
    before = build_manifest(repo)
    with TritonProcess(TritonConfig(repo)) as proc:
        http = thttp.InferenceServerClient(proc.http_url.removeprefix("http://"))
        http.infer("add_sub", add_sub_inputs(thttp, [1], [2]))
    assert not list(repo.rglob("__pycache__"))
    assert build_manifest(repo).digest == before.digest


def test_served_snapshot_holds_no_bytecode(triton: TritonProcess) -> None:
    http = thttp.InferenceServerClient(triton.http_url.removeprefix("http://"))
    http.infer("add_sub", add_sub_inputs(thttp, [1], [2]))
    assert triton.served_repository != demo_repository()
    assert not [p for p in triton.served_repository.rglob("__pycache__") if p.is_dir()]


def test_free_ports_avoid_the_ephemeral_range_and_do_not_repeat() -> None:
    from triton_backend.launch import _ephemeral_range

    low, _ = _ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(p < low for p in ports)  # never a port an outgoing connection could take meanwhile
