"""`ratls verify https://...` against a real TLS server on loopback serving an RA-TLS cert."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratls.cli import main
from ratls.client.fetch import fetch_certificate, parse_target
from ratls.errors import EvidenceError, UsageError
from ratls.testing.tls_server import serve_certificate


@pytest.fixture
def tls_server(tmp_path: Path, sim_state: Path) -> Iterator[tuple[int, Path]]:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    assert main(["cert", "issue", "--platform", "sim", "--sim-dir", str(sim_state), "--out-cert", str(cert),
                 "--out-key", str(key)]) == 0
    with serve_certificate(cert, key) as port:
        yield port, cert


def test_verify_live_server(tls_server: tuple[int, Path], tmp_path: Path, capsys) -> None:
    port, cert = tls_server
    policy = tmp_path / "p.yaml"
    assert main(["policy", "init", "--from", f"https://127.0.0.1:{port}", "--out", str(policy)]) == 0
    capsys.readouterr()
    assert main(["verify", f"https://127.0.0.1:{port}", "--policy", str(policy), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "pass"


def test_fetch_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EvidenceError, match="nothing is listening on 127.0.0.1"):
        fetch_certificate(parse_target(f"https://127.0.0.1:{port}"), timeout=2)
    with pytest.raises(UsageError, match="only https"):
        parse_target("http://x:1")
    assert parse_target("gw.example:8443").port == 8443
    assert parse_target("https://[::1]:9").server_name is None
