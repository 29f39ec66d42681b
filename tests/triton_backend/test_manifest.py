"""The model-repository manifest: stable, sensitive to every change, refuses escapes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from triton_backend.demo import demo_repository
from triton_backend.manifest import ManifestError, RepositoryWatch, build_manifest, diff


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    target = tmp_path / "repo"
    shutil.copytree(demo_repository(), target)
    return target


def test_stable_across_copies_and_paths(repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "models"
    shutil.copytree(repo, other)
    os.utime(other / "add_sub" / "config.pbtxt", (0, 0))  # metadata must not matter
    a, b = build_manifest(repo), build_manifest(other)
    assert a.canonical() == b.canonical() and a.digest == b.digest
    assert a.digest == build_manifest(repo).digest
    assert set(a.model_digests()) == {"add_sub", "text_transform", "repeat"}
    assert a.claims()["manifest"] == a.digest


def test_contents_are_listed(repo: Path) -> None:
    m = build_manifest(repo)
    paths = {f["path"] for model in m.to_json()["models"] for f in model["files"]}
    assert "add_sub/config.pbtxt" in paths and "add_sub/1/model.py" in paths
    model = next(x for x in m.to_json()["models"] if x["name"] == "add_sub")
    assert model["versions"] == ["1"]


@pytest.mark.parametrize("change", ["edit", "add", "remove", "rename"])
def test_any_change_changes_the_digest(repo: Path, change: str) -> None:
    before = build_manifest(repo)
    target = repo / "add_sub" / "1" / "model.py"
    if change == "edit":
        target.write_bytes(target.read_bytes() + b"\n# x")
    elif change == "add":
        (repo / "add_sub" / "1" / "weights.bin").write_bytes(b"\0")
    elif change == "remove":
        (repo / "text_transform" / "config.pbtxt").unlink()
    else:
        target.rename(target.with_name("model2.py"))
    after = build_manifest(repo)
    assert after.digest != before.digest
    assert diff(before, after)


def test_per_model_digest_isolated(repo: Path) -> None:
    before = build_manifest(repo)
    (repo / "add_sub" / "config.pbtxt").write_text("changed")
    after = build_manifest(repo)
    assert after.model_digest("add_sub") != before.model_digest("add_sub")
    assert after.model_digest("repeat") == before.model_digest("repeat")


def test_symlink_inside_is_followed_outside_refused(repo: Path, tmp_path: Path) -> None:
    (repo / "add_sub" / "1" / "alias.py").symlink_to(repo / "add_sub" / "1" / "model.py")
    assert any(f.path == "add_sub/1/alias.py" for f in build_manifest(repo).models["add_sub"])
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"outside")
    (repo / "add_sub" / "1" / "escape.bin").symlink_to(secret)
    with pytest.raises(ManifestError, match="outside the model repository"):
        build_manifest(repo)


def test_directory_symlink_escape_refused(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (repo / "add_sub" / "2").symlink_to(tmp_path / "outside")
    with pytest.raises(ManifestError, match="outside"):
        build_manifest(repo)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not a directory"):
        build_manifest(tmp_path / "none")


def test_fifo_refused(repo: Path) -> None:
    os.mkfifo(repo / "add_sub" / "pipe")
    with pytest.raises(ManifestError, match="neither a file nor a directory"):
        build_manifest(repo)


def test_watch_detects_change(repo: Path) -> None:
    watch = RepositoryWatch(repo)
    assert watch.changes() == []
    os.utime(repo / "add_sub" / "config.pbtxt", (1, 1))
    assert watch.changes() == []  # metadata only
    (repo / "repeat" / "1" / "model.py").write_text("# replaced\n")
    assert watch.changes() == ["changed repeat/1/model.py"]


def test_large_file_streams(repo: Path) -> None:
    big = repo / "add_sub" / "1" / "weights.bin"
    with open(big, "wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: 64 MiB of zeros, hashed in 1 MiB chunks
    m = build_manifest(repo)
    entry = next(f for f in m.models["add_sub"] if f.path.endswith("weights.bin"))
    assert entry.size == 64 * 1024 * 1024
    assert entry.sha256 == "3b6a07d0d404fab4e23b6d34bc6696a6a312dd92821332385e5af7c01c421351"


def test_bytecode_cache_refused_and_blockers_ignored(repo: Path, tmp_path: Path) -> None:
    from triton_backend.manifest import snapshot_repository

    before = build_manifest(repo)
    served = snapshot_repository(repo, tmp_path / "served")
    assert (served / "add_sub" / "1" / "__pycache__").is_file()
    assert build_manifest(served).digest == before.digest
    (repo / "add_sub" / "1" / "__pycache__").mkdir()
    with pytest.raises(ManifestError, match="compiled bytecode"):
        build_manifest(repo)


def test_bytecode_blockers_keep_the_manifest_and_stop_pycache(tmp_path: Path) -> None:
    from triton_backend.manifest import PYCACHE, block_bytecode

    repo = tmp_path / "models"
    shutil.copytree(demo_repository(), repo)
    before = build_manifest(repo).digest
    laid = block_bytecode(repo)
    assert (repo / "add_sub" / "1" / PYCACHE) in laid and (repo / PYCACHE) in laid
    assert build_manifest(repo).digest == before
    assert block_bytecode(repo) == []  # idempotent
    with pytest.raises(FileExistsError):
        (repo / "add_sub" / "1" / PYCACHE).mkdir()  # what Python's import would try
    (repo / "text_transform" / "1" / PYCACHE).unlink()
    (repo / "text_transform" / "1" / PYCACHE).mkdir()
    with pytest.raises(ManifestError, match="compiled bytecode") as exc:
        block_bytecode(repo)
    assert "block-bytecode" in str(exc.value)


def test_a_symlink_loop_is_a_manifest_error(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    shutil.copytree(demo_repository(), repo)
    link = repo / "add_sub" / "loop"
    link.symlink_to(link)
    with pytest.raises(ManifestError, match="add_sub/loop' is a symlink loop"):
        build_manifest(repo)


def test_a_change_made_while_the_watch_hashes_is_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import triton_backend.manifest as manifest_module

    repo = tmp_path / "models"
    shutil.copytree(demo_repository(), repo)
    model = repo / "add_sub" / "1" / "model.py"
    real_build = manifest_module.build_manifest

    def build_then_edit(path):  # type: ignore[no-untyped-def]
        measured = real_build(path)
        model.write_text(model.read_text() + "# edited while the watch was hashing\n")
        return measured

    monkeypatch.setattr(manifest_module, "build_manifest", build_then_edit)
    watch = RepositoryWatch(repo)
    monkeypatch.setattr(manifest_module, "build_manifest", real_build)
    assert watch.changes() == ["changed add_sub/1/model.py"]


def test_a_hard_linked_snapshot_is_recognised_without_hashing(tmp_path: Path) -> None:
    from triton_backend.manifest import snapshot_repository

    repo = tmp_path / "models"
    shutil.copytree(demo_repository(), repo)
    watch = RepositoryWatch(repo)
    assert watch.describes(snapshot_repository(repo, tmp_path / "snap"))
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)  # same bytes, other inodes: not the measured files
    assert not watch.describes(copy) and not watch.describes(tmp_path / "missing")
    (repo / "add_sub" / "1" / "model.py").write_text("# edited in place\n")  # the snapshot's inode too
    assert not watch.describes(tmp_path / "snap")
