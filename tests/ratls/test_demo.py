from __future__ import annotations

from pathlib import Path

import pytest

from ratls import demo


def test_library_demo_gives_every_expected_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RATLS_SIM_DIR", str(tmp_path / "sim"))
    assert demo.main() == 0
    out = capsys.readouterr().out
    assert "demo: all verdicts as expected" in out
    assert "binding.pubkey-hash" in out and "policy.tdx.mrtd" in out
