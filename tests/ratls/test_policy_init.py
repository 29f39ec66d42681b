"""`ratls policy init` on simulated evidence: the server's simulated root is compared with the
local one (`ratls sim root`: --sim-dir, else $RATLS_SIM_DIR, else the default state dir)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ratls.cli import main
from ratls.platforms.sim.chain import SimChain


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _issue(capsys: pytest.CaptureFixture[str], tmp_path: Path, platform: str, sim_dir: Path) -> Path:
    cert = tmp_path / "c.pem"
    assert run(capsys, "cert", "issue", "--platform", platform, "--sim-dir", str(sim_dir), "--out-cert", str(cert),
               "--out-key", str(tmp_path / "k.pem"))[0] == 0
    return cert


def test_matching_local_root_is_pinned(capsys, tmp_path: Path, sim_state: Path, sim_chain: SimChain,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cert, policy = _issue(capsys, tmp_path, "sim", sim_state), tmp_path / "p.yaml"
    monkeypatch.setenv("RATLS_SIM_DIR", str(sim_state))  # found the way `ratls sim root` finds it
    code, _, err = run(capsys, "policy", "init", "--from", str(cert), "--out", str(policy))
    assert code == 0, err
    assert f"simulated root {sim_chain.root_sha256} matches the local simulated root" in err
    assert "WARNING" not in err and sim_chain.root_sha256 in policy.read_text()
    assert run(capsys, "verify", str(cert), "--policy", str(policy))[0] == 0


def test_other_local_root_is_refused(capsys, tmp_path: Path) -> None:
    server_dir, local_dir = tmp_path / "server-sim", tmp_path / "local-sim"
    cert, policy = _issue(capsys, tmp_path, "sim-tdx", server_dir), tmp_path / "p.yaml"
    roots = {}
    for name, state in (("server", server_dir), ("local", local_dir)):
        code, out, _ = run(capsys, "sim", "root", "--platform", "sim-tdx", "--sim-dir", str(state))
        roots[name] = json.loads(out)["root_sha256"]
    assert roots["server"] != roots["local"]
    code, out, err = run(capsys, "policy", "init", "--from", str(cert), "--sim-dir", str(local_dir),
                         "--out", str(policy))
    assert code == 1, err
    assert roots["server"] in err and roots["local"] in err
    assert not policy.exists() and out == ""


def test_no_local_root_is_taken_on_first_use_loudly(capsys, tmp_path: Path, sim_state: Path,
                                                    sim_chain: SimChain, _no_local_simulator: Path) -> None:
    cert, policy = _issue(capsys, tmp_path, "sim", sim_state), tmp_path / "p.yaml"
    code, _, err = run(capsys, "policy", "init", "--from", str(cert), "--out", str(policy))
    assert code == 0, err
    assert "WARNING" in err and "first use" in err and sim_chain.root_sha256 in err
    assert f"# WARNING: simulated root {sim_chain.root_sha256}" in policy.read_text()
    assert not _no_local_simulator.exists()  # looking for the local root creates none
