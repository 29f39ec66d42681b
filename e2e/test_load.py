"""A bounded mixed load on the real stack: small and large HTTP infers, gRPC infers and gRPC
streams at once, every success and failure counted (zero failures expected)."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from triton_backend.demo import repeat_inputs

from .load import fetch_pem, run_load
from .stack import Stack, start_stack

pytestmark = pytest.mark.slow
SECONDS = 20.0
LARGE = 262144  # 2 x 1 MiB binary tensors


@pytest.fixture(scope="module")
def lstack(sim_state: Path) -> Iterator[Stack]:
    s = start_stack({"filters": {"limits": {"rate_limit": None, "per_client_rate_limit": None}}}, sim_dir=sim_state)
    yield s
    s.stop()


def _grpc_client(stack: Stack, tmp: Path):  # type: ignore[no-untyped-def]
    import tritonclient.grpc as tgrpc

    pem = tmp / "served.pem"
    pem.write_text(fetch_pem(stack.port))
    return tgrpc.InferenceServerClient(f"127.0.0.1:{stack.port}", ssl=True, root_certificates=str(pem),
                                       channel_args=[("grpc.ssl_target_name_override", "localhost")])


def test_mixed_load_zero_failures(lstack: Stack, tmp_path: Path) -> None:
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp

    counts = {"large": [0, 0], "stream": [0, 0]}
    errors: list[str] = []
    deadline = time.monotonic() + SECONDS

    def large_worker() -> None:
        from .stack import pinned_context

        ctx = pinned_context(fetch_pem(lstack.port))
        client = thttp.InferenceServerClient(f"127.0.0.1:{lstack.port}", ssl=True, ssl_context_factory=lambda: ctx,
                                             connection_timeout=30, network_timeout=30)
        a = np.arange(LARGE, dtype=np.float32)
        while time.monotonic() < deadline:
            try:
                x = thttp.InferInput("INPUT0", [LARGE], "FP32")
                x.set_data_from_numpy(a, binary_data=True)
                y = thttp.InferInput("INPUT1", [LARGE], "FP32")
                y.set_data_from_numpy(a, binary_data=True)
                out = client.infer("add_sub", [x, y], outputs=[thttp.InferRequestedOutput("OUTPUT0", binary_data=True)])
                assert out.as_numpy("OUTPUT0")[-1] == 2 * (LARGE - 1)
                counts["large"][0] += 1
            except Exception as exc:  # noqa: BLE001 - counted
                counts["large"][1] += 1
                errors.append(repr(exc)[:200])

    def stream_worker() -> None:
        try:
            _stream_worker()
        except Exception as exc:  # noqa: BLE001 - counted
            counts["stream"][1] += 1
            errors.append(repr(exc)[:200])

    def _stream_worker() -> None:
        client = _grpc_client(lstack, tmp_path)
        results: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: results.put((result, error)))
        while time.monotonic() < deadline:
            client.async_stream_infer("repeat", repeat_inputs(tgrpc, 5, b"load"))
            got = []
            for _ in range(5):
                result, error = results.get(timeout=30)
                if error is not None:
                    counts["stream"][1] += 1
                    errors.append(repr(error)[:200])
                    break
                got.append(int(result.as_numpy("INDEX")[0]))
            if got == [0, 1, 2, 3, 4]:
                counts["stream"][0] += 1
        client.stop_stream()

    small, threads = run_load(lstack.port, SECONDS, http_workers=2, reconnect_every=50, grpc_workers=1)
    extra = [threading.Thread(target=large_worker), threading.Thread(target=stream_worker)]
    for t in extra:
        t.start()
    for t in threads + extra:
        t.join(SECONDS + 60)
    summary = {"small_http+grpc_ok": small.ok, "small_failed": small.failed, "large_ok": counts["large"][0],
               "large_failed": counts["large"][1], "streams_ok": counts["stream"][0],
               "streams_failed": counts["stream"][1]}
    print("\nmixed load:", json.dumps(summary))
    assert small.failed == 0, small.errors
    assert counts["large"][1] == 0 and counts["stream"][1] == 0, errors[:5]
    assert small.ok > 500 and counts["large"][0] > 20 and counts["stream"][0] > 20, summary
