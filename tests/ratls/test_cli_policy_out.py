"""`ratls policy init --out P` never silently replaces a (reviewed) policy, and writes atomically."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ratls.fileutil
from ratls.cli import main


@pytest.fixture
def sim_dir(sim_state: Path) -> list[str]:
    return ["--sim-dir", str(sim_state)]  # the local root matches: no TOFU warning in the way


def test_existing_policy_is_not_overwritten(cert: Path, tmp_path: Path, sim_dir: list[str], capsys) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("# reviewed by hand\n")
    code = main(["policy", "init", "--from", str(cert), "--out", str(policy), *sim_dir])
    err = capsys.readouterr().err
    assert code == 2 and policy.read_text() == "# reviewed by hand\n"
    assert f"'{policy}' already exists" in err and "--force" in err and "another --out path" in err


def test_force_replaces_it(cert: Path, tmp_path: Path, sim_dir: list[str]) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("# reviewed by hand\n")
    assert main(["policy", "init", "--from", str(cert), "--out", str(policy), "--force", *sim_dir]) == 0
    assert "trust_on_first_use: true" in policy.read_text()


def test_failed_write_leaves_the_old_file(cert: Path, tmp_path: Path, sim_dir: list[str],
                                          monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("# reviewed by hand\n")

    def disk_full(path: Path, data: bytes, *, mode: int = 0o644) -> None:
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(ratls.fileutil, "write_atomic", disk_full)
    code = main(["policy", "init", "--from", str(cert), "--out", str(policy), "--force", *sim_dir])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write the policy" in err and "No space left" in err
    assert policy.read_text() == "# reviewed by hand\n"


def test_write_is_atomic(cert: Path, tmp_path: Path, sim_dir: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # The policy reaches its path only by a rename of a complete temporary file.
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        renames.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    policy = tmp_path / "new" / "p.yaml"
    assert main(["policy", "init", "--from", str(cert), "--out", str(policy), *sim_dir]) == 0
    assert [dst for _, dst in renames] == [str(policy)] and "trust_on_first_use: true" in policy.read_text()
    assert sorted(p.name for p in policy.parent.iterdir()) == ["p.yaml"]
