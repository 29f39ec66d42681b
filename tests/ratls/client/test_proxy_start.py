"""`ratls proxy` verifies its target once before listening: a policy failure exits 1 at once with
the reason on stderr (not "Empty reply from server" for every client later), an unreachable
target exits 2; `--lazy` skips the start check."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratls.cli import main
from ratls.platforms.sim.chain import SimChain
from ratls.testing.tls_server import serve_certificate

RATLS = str(Path(sys.executable).parent / "ratls")
STRICT = Path(__file__).resolve().parents[3] / "config/policies/snp-strict.yaml"


@pytest.fixture
def target(tmp_path: Path, sim_state: Path) -> Iterator[int]:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    assert main(["cert", "issue", "--platform", "sim", "--sim-dir", str(sim_state), "--out-cert", str(cert),
                 "--out-key", str(key)]) == 0
    with serve_certificate(cert, key) as port:
        yield port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proxy(*args: str) -> subprocess.CompletedProcess[str]:
    # A proxy that does not check at start would serve until killed: the timeout fails the test.
    return subprocess.run([RATLS, "proxy", "--listen", f"127.0.0.1:{_free_port()}", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def _serve_then_stop(*args: str) -> tuple[int, str]:
    """Start the proxy, wait until it accepts connections, stop it as an operator would."""
    port = _free_port()
    proc = subprocess.Popen([RATLS, "proxy", "--listen", f"127.0.0.1:{port}", *args], stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def test_failing_policy_exits_1_before_listening(target: int) -> None:
    done = _proxy("--target", f"127.0.0.1:{target}", "--policy", str(STRICT))
    assert done.returncode == 1, done.stderr
    assert "[FAIL] policy.platform: evidence is SIMULATED and the policy does not allow simulation" in done.stderr
    assert "not starting the proxy" in done.stderr


def test_unreachable_target_exits_2(tmp_path: Path) -> None:
    done = _proxy("--target", f"127.0.0.1:{_free_port()}", "--policy", str(STRICT))
    assert done.returncode == 2
    assert "cannot verify the proxy target" in done.stderr and "--lazy" in done.stderr
    assert "Traceback" not in done.stderr


def test_passing_target_starts_and_says_so(target: int, tmp_path: Path, sim_chain: SimChain) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(f"version: 1\nplatforms: []\nallow_simulated: true\n"
                      f"simulated: {{root_sha256: '{sim_chain.root_sha256}'}}\n"
                      f"sev-snp: {{measurements: ['{sim_chain.measurement.hex()}']}}\n")
    code, err = _serve_then_stop("--target", f"127.0.0.1:{target}", "--policy", str(policy))
    assert code == 0, err
    assert f"127.0.0.1:{target} passed the policy" in err and "ratls proxy on" in err


def test_lazy_starts_before_the_server() -> None:
    code, err = _serve_then_stop("--target", f"127.0.0.1:{_free_port()}", "--policy", str(STRICT), "--lazy")
    assert code == 0, err
    assert "ratls proxy on" in err and "passed the policy" not in err
