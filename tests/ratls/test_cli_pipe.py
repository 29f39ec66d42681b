"""`ratls ... | head -1`: a reader that leaves early costs neither a traceback nor the exit code
(a PASS stays 0, a FAIL stays 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ratls.cli import main
from ratls.platforms.sim.chain import SimChain

RATLS = str(Path(sys.executable).parent / "ratls")
STRICT = Path(__file__).resolve().parents[2] / "config/policies/snp-strict.yaml"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, sim_state: Path, sim_chain: SimChain) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("pipe")
    cert, policy = tmp / "c.pem", tmp / "p.yaml"
    assert main(["cert", "issue", "--platform", "sim", "--sim-dir", str(sim_state), "--out-cert", str(cert),
                 "--out-key", str(tmp / "k.pem")]) == 0
    policy.write_text(f"version: 1\nplatforms: []\nallow_simulated: true\n"
                      f"simulated: {{root_sha256: '{sim_chain.root_sha256}'}}\n"
                      f"sev-snp: {{measurements: ['{sim_chain.measurement.hex()}']}}\n")
    return {"cert": cert, "policy": policy}


def _into_closed_pipe(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ratls with stdout a pipe whose reader has already gone: every write to it fails."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([RATLS, *args], stdout=write_end, stderr=subprocess.PIPE, timeout=60, check=False)
    finally:
        os.close(write_end)


@pytest.mark.parametrize(("args", "code"), [
    (["cert", "show", "{cert}"], 0),
    (["cert", "show", "{cert}", "--json"], 0),
    (["verify", "{cert}", "--policy", "{policy}"], 0),
    (["verify", "{cert}", "--policy", "{policy}", "--json"], 0),
    (["verify", "{cert}", "--policy", str(STRICT)], 1),
])
def test_closed_pipe_keeps_the_exit_code(files: dict[str, Path], args: list[str], code: int) -> None:
    done = _into_closed_pipe(*(a.format(**files) for a in args))
    assert done.returncode == code, done.stderr.decode()
    assert b"Traceback" not in done.stderr and b"BrokenPipeError" not in done.stderr
    assert b"Exception ignored" not in done.stderr


def test_head_1(files: dict[str, Path]) -> None:
    script = f'"{RATLS}" cert show "{files["cert"]}" --json | head -1; echo "status=${{PIPESTATUS[0]}}"'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.splitlines() == ["{", "status=0"], done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr
