"""`ratls grpcurl` and `ratls curl`: arguments after `--` reach the tool verbatim; the grpcurl
probe connection must verify too, and no service list is printed that a verified server did
not give."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratls.cli import main
from ratls.client.tools import Probe, classify_probe, find_tool, grpcurl_target
from ratls.errors import UsageError
from ratls.testing.tls_server import serve_certificate

# What a grpcurl stand-in does, by invocation: the probe (`list` without -protoset), a `list`
# answered from a -protoset, and anything else.
FAKE_TOOL = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_TOOL_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if os.path.basename(sys.argv[0]) == "grpcurl" and args[-1] == "list":
    if "-protoset" in args:
        print("inference.GRPCInferenceService")
        sys.exit(0)
    if os.environ["FAKE_REFLECTION"] == "no":
        print("Failed to list services: server does not support the reflection API", file=sys.stderr)
        sys.exit(1)
    print("grpc.reflection.v1.ServerReflection")
sys.exit(0)
"""


def _issue(tmp_path: Path, sim_state: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    assert main(["cert", "issue", "--platform", "sim", "--sim-dir", str(sim_state), "--out-cert", str(cert),
                 "--out-key", str(key), "--san", "localhost"]) == 0
    return cert, key


@pytest.fixture
def server(tmp_path: Path, sim_state: Path) -> Iterator[int]:
    with serve_certificate(*_issue(tmp_path, sim_state, "gw")) as port:
        yield port


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """grpcurl and curl stand-ins first on PATH; each call's arguments are logged, one JSON line."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    for name in ("grpcurl", "curl"):
        tool = bin_dir / name
        tool.write_text(FAKE_TOOL.format(python=sys.executable))
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_TOOL_LOG", str(log))
    monkeypatch.setenv("FAKE_REFLECTION", "yes")
    return log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_grpcurl_args_after_double_dash_pass_verbatim(server: int, policy: Path, fake_tools: Path) -> None:
    user = ["-v", "-H", "x-trace: 1", f"127.0.0.1:{server}", "list"]
    assert main(["grpcurl", "--policy", str(policy), "--", *user]) == 0
    probe, run = calls(fake_tools)
    assert probe[-2:] == [f"127.0.0.1:{server}", "list"] and "-cacert" in probe
    assert run[:4] == ["-cacert", run[1], "-authority", "localhost"] and run[4:] == user


def test_curl_args_after_double_dash_pass_verbatim(server: int, policy: Path, fake_tools: Path) -> None:
    user = ["-v", "-sS", "-H", "X-A: b", f"https://127.0.0.1:{server}/v2/health/ready"]
    assert main(["curl", "--policy", str(policy), "--", *user]) == 0
    [run] = calls(fake_tools)
    assert run[:2] == ["-k", "--pinnedpubkey"] and run[2].startswith("sha256//") and run[3:] == user


def test_grpcurl_list_is_never_answered_from_the_bundled_protoset(
        server: int, policy: Path, fake_tools: Path, monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    monkeypatch.setenv("FAKE_REFLECTION", "no")
    code = main(["grpcurl", "--policy", str(policy), "--", f"127.0.0.1:{server}", "list"])
    out, err = capfd.readouterr()
    assert code == 2 and "GRPCInferenceService" not in out
    assert "no gRPC reflection" in err
    assert len(calls(fake_tools)) == 1  # the probe only


def test_grpcurl_invocation_without_reflection_uses_the_bundled_protoset(
        server: int, policy: Path, fake_tools: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_REFLECTION", "no")
    user = ["-d", "{}", f"127.0.0.1:{server}", "inference.GRPCInferenceService/ServerLive"]
    assert main(["grpcurl", "--policy", str(policy), "--", *user]) == 0
    _, run = calls(fake_tools)
    assert "-protoset" in run and run[-len(user):] == user


def test_grpcurl_refuses_when_its_own_connection_gets_another_certificate(
        tmp_path: Path, sim_state: Path, policy: Path, capfd) -> None:
    try:
        find_tool("grpcurl")
    except UsageError:
        pytest.skip("grpcurl is not installed")
    verified, swapped = _issue(tmp_path, sim_state, "a"), _issue(tmp_path, sim_state, "b")
    with serve_certificate(*verified, then=swapped) as port:
        capfd.readouterr()
        code = main(["grpcurl", "--policy", str(policy), "--", f"127.0.0.1:{port}", "list"])
    out, err = capfd.readouterr()
    assert code == 1, err
    assert "GRPCInferenceService" not in out
    assert "[FAIL] grpcurl.pinned-certificate" in err and "x509:" in err


@pytest.mark.parametrize(("args", "target"), [
    (["-v", "h:1", "list"], (1, "h:1")),
    (["-vv", "-plaintext", "h:1"], (2, "h:1")),
    (["-d", "{}", "--max-time", "5", "h:1", "svc/M"], (4, "h:1")),
    (["-d={}", "--H=a: b", "h:1"], (2, "h:1")),
    (["-unix", "-H", "a: b", "h:1"], (3, "h:1")),
    (["-d", "{}", "--", "h:1"], (3, "h:1")),
])
def test_grpcurl_target(args: list[str], target: tuple[int, str]) -> None:
    assert grpcurl_target(args) == target


@pytest.mark.parametrize(("returncode", "stderr", "probe"), [
    (0, "", Probe.REFLECTION),
    (1, "Failed to list services: server does not support the reflection API", Probe.NO_REFLECTION),
    (1, "Failed to list services: rpc error: code = Unauthenticated desc = no credentials", Probe.NO_REFLECTION),
    (1, 'Failed to dial target host "127.0.0.1:9": x509: certificate signed by unknown authority',
     Probe.CERTIFICATE_REFUSED),
    (1, 'Failed to dial target host "127.0.0.1:9": x509: certificate is valid for localhost, not other',
     Probe.CERTIFICATE_REFUSED),
    (1, 'Failed to dial target host "127.0.0.1:9": dial tcp 127.0.0.1:9: connect: connection refused',
     Probe.UNREACHABLE),
    (1, 'Failed to dial target host "127.0.0.1:9": context deadline exceeded', Probe.UNREACHABLE),
    (1, 'Failed to dial target host "127.0.0.1:9": remote error: tls: certificate required', Probe.UNREACHABLE),
])
def test_classify_probe(returncode: int, stderr: str, probe: Probe) -> None:
    assert classify_probe(returncode, stderr) is probe
