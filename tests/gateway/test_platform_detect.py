from __future__ import annotations

from pathlib import Path

import pytest

from gateway.platform_detect import detect
from ratls.errors import ConfigError


def test_no_tee_refuses_with_a_way_out(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no TEE detected") as info:
        detect(tmp_path / "tsm", tmp_path / "sev-guest", tmp_path / "tdx_guest")
    assert "identity.platform: sim" in str(info.value)


def test_legacy_sev_guest_device(tmp_path: Path) -> None:
    (tmp_path / "sev-guest").touch()
    assert detect(tmp_path / "tsm", tmp_path / "sev-guest", tmp_path / "tdx_guest") == "sev-snp"


def test_tdx_is_named_not_silently_accepted(tmp_path: Path) -> None:
    (tmp_path / "tdx_guest").touch()
    with pytest.raises(ConfigError, match="Intel TDX"):
        detect(tmp_path / "tsm", tmp_path / "sev-guest", tmp_path / "tdx_guest")
