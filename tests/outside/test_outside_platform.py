"""A platform defined outside ``ratls/`` appears everywhere a platform does, through the
registry alone: CLI help, policy parsing, certificate display, verification, gateway config
validation and detection."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from ratls import registry
from ratls.cert import generate_key
from ratls.cli import main
from ratls.errors import PolicyError
from ratls.host_probe import HostProbe
from ratls.issue import issue_certificate
from ratls.policy import parse_policy
from ratls.testing.fake_tsm import FakeTsm

from .toy_platform import ToyPlatform

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def toy() -> Iterator[None]:
    registry.register(ToyPlatform)
    yield
    registry.unregister(ToyPlatform.name)


@pytest.fixture
def cert_file(tmp_path: Path) -> Path:
    issued = issue_certificate(ToyPlatform(), generate_key("p256"), now=NOW, lifetime=timedelta(hours=1))
    path = tmp_path / "toy.pem"
    path.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_cli_help_lists_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "toy-tee" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["cert", "issue", "--help"])
    assert "toy-tee" in capsys.readouterr().out


def test_policy_reads_its_section_and_refuses_a_typo() -> None:
    policy = parse_policy({"version": 1, "platforms": ["toy-tee"], "toy-tee": {"measurements": ["07" * 8]}})
    assert policy.toy.measurements == [b"\x07" * 8]
    with pytest.raises(PolicyError, match=r"policy\.toy-tee\.measurement: unknown key"):
        parse_policy({"version": 1, "platforms": ["toy-tee"], "toy-tee": {"measurement": ["07" * 8]}})


def test_cert_show_decodes_its_report(cert_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cert", "show", str(cert_file), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["evidence"]["platform"] == "toy-tee"
    assert shown["report"]["measurements"] == {"toy_measurement": "07" * 8}


def test_verify_passes_and_fails_on_its_own_section(tmp_path: Path, cert_file: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(f"version: 1\nplatforms: [toy-tee]\ntoy-tee:\n  measurements: ['{'07' * 8}']\n")
    bad.write_text(f"version: 1\nplatforms: [toy-tee]\ntoy-tee:\n  measurements: ['{'08' * 8}']\n")
    at = ["--at", (NOW + timedelta(minutes=1)).isoformat()]
    assert main(["verify", str(cert_file), "--policy", str(good), *at]) == 0
    assert main(["verify", str(cert_file), "--policy", str(bad), *at]) == 1


def test_gateway_config_accepts_it_and_builds_it(tmp_path: Path) -> None:
    from gateway.config import load_config
    from gateway.tee_platform import build_platform

    cfg = load_config(None, {"RATLS_GATEWAY__IDENTITY__PLATFORM": "toy-tee"})
    assert isinstance(build_platform(cfg.identity), ToyPlatform)


def test_detection_asks_it(tmp_path: Path) -> None:
    tsm = FakeTsm(tmp_path / "tsm", lambda data, level: (b"", None), provider="toy_guest")
    assert registry.detect(HostProbe(tsm.root, fs=tsm, locate=lambda p: tmp_path / p.name)) == "toy-tee"
