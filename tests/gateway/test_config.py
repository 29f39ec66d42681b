from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from ratls.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "gateway.yaml"


def test_shipped_default_loads() -> None:
    cfg = load_config(SHIPPED, {})
    assert cfg.listen.port == 8443 and cfg.identity.platform == "auto" and cfg.triton.mode == "managed"
    assert cfg.identity.lifetime_td.total_seconds() == 86400


def test_environment_overrides() -> None:
    cfg = load_config(SHIPPED, {"RATLS_GATEWAY__LISTEN__PORT": "9443", "RATLS_GATEWAY__IDENTITY__PLATFORM": "sim",
                                "RATLS_GATEWAY__IDENTITY__SANS": "[gw.example, 10.0.0.5]",
                                "RATLS_GATEWAY__TRITON__MODE": "external",
                                "RATLS_GATEWAY__TRITON__HTTP_PORT": "8000",
                                "RATLS_GATEWAY__TRITON__GRPC_PORT": "8001", "UNRELATED": "x"})
    assert cfg.listen.port == 9443 and cfg.identity.platform == "sim"
    assert cfg.identity.sans == ["gw.example", "10.0.0.5"] and cfg.triton.mode == "external"


@pytest.mark.parametrize(("env", "message"), [
    ({"RATLS_GATEWAY__LISTEN__PROT": "1"}, "listen.prot: unknown key"),
    ({"RATLS_GATEWAY__LISTEN__PORT": "http"}, "listen.port: expected an integer"),
    ({"RATLS_GATEWAY__LISTEN__PORT": "70000"}, "not a TCP port"),
    ({"RATLS_GATEWAY__IDENTITY__PLATFORM": "sgx"}, "identity.platform: 'sgx' is not one of"),
    ({"RATLS_GATEWAY__IDENTITY__LIFETIME": "soon"}, "identity.lifetime"),
    ({"RATLS_GATEWAY__IDENTITY__LIFETIME": "30s"}, "at least 2m"),
    ({"RATLS_GATEWAY__IDENTITY__ROTATE_AT": "0.99"}, "rotate_at"),
    ({"RATLS_GATEWAY__CONTROL__METRICS_ADDRESS": "0.0.0.0"}, "must stay on loopback"),
    ({"RATLS_GATEWAY__TRITON__MODE": "external"}, "required in external mode"),
    ({"RATLS_GATEWAY__TRITON__MODE": "external", "RATLS_GATEWAY__TRITON__HTTP_PORT": "1",
      "RATLS_GATEWAY__TRITON__GRPC_PORT": "2", "RATLS_GATEWAY__TRITON__HOST": "10.1.2.3"}, "on loopback"),
    ({"RATLS_GATEWAY__LISTEN__ADDRESS": "example.com"}, "not an IP address"),
    ({"RATLS_GATEWAY__IDENTITY__SANS": "{a: 1}"}, "list of strings"),
    # a key written empty is refused, not read as "unset": a null on_exposed once served an
    # exposed Triton, and a null mode skipped the external-mode loopback check
    ({"RATLS_GATEWAY__TRITON__ON_EXPOSED": ""}, "triton.on_exposed: must not be empty"),
    ({"RATLS_GATEWAY__TRITON__ON_REPOSITORY_CHANGE": "null"}, "triton.on_repository_change: must not be empty"),
    ({"RATLS_GATEWAY__TRITON__MODE": "~", "RATLS_GATEWAY__TRITON__HOST": "10.0.0.5"}, "triton.mode: must not be"),
    ({"RATLS_GATEWAY__IDENTITY__TDX__EMBED": ""}, "identity.tdx.embed: must not be empty"),
    ({"RATLS_GATEWAY__TRITON__WATCH_INTERVAL": ""}, "triton.watch_interval: must not be empty"),
    ({"RATLS_GATEWAY__LISTEN__SESSION_TICKET_ROTATION": "2s"}, "session_ticket_rotation: 0:00:02 is outside"),
    ({"RATLS_GATEWAY__LISTEN__SESSION_TICKET_ROTATION": "7d"}, "session_ticket_rotation: 7 days, 0:00:00 is outside"),
    ({"RATLS_GATEWAY__LISTEN__SESSION_RESUMPTION": "sometimes"}, "listen.session_resumption"),
])
def test_invalid_settings_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(SHIPPED, env)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read gateway config"):
        load_config(tmp_path / "missing.yaml", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, {})
    bad.write_text("- 1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad, {})
    bad.write_text("version: 2\n")
    with pytest.raises(ConfigError, match="version: 2 is not supported"):
        load_config(bad, {})


def test_durations_are_timedeltas_and_an_empty_sans_list_stays_empty() -> None:
    from datetime import timedelta

    cfg = load_config(SHIPPED, {"RATLS_GATEWAY__TRITON__WATCH_INTERVAL": "2m", "RATLS_GATEWAY__IDENTITY__SANS": "[]"})
    assert cfg.triton.watch_interval == timedelta(minutes=2) and cfg.identity.sans == []
