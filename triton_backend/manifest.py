"""A deterministic manifest of a Triton model repository: what the attestation says is
being served.

Every regular file under the repository (``config.pbtxt`` included) is listed with its
path relative to the repository (POSIX separators), size and SHA-256, grouped per model
(the first path component). Symlinks are followed only when they resolve inside the
repository; one that leaves it is refused, since it would let unmeasured files be served.
The canonical form is JSON with sorted keys and no whitespace; digests are SHA-256 over
that canonical form, for the whole repository and per model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ratls.canonical import canonical_json

MANIFEST_SCHEMA = "ratls-model-manifest/1"
CHUNK = 1 << 20  # hashing streams in 1 MiB reads: memory stays flat whatever the file size
ROOT_FILES = "_root"  # files directly in the repository root (not a model, but still served-adjacent)


PYCACHE = "__pycache__"


class ManifestError(Exception):
    """The repository cannot be measured (escaping symlink, unreadable file, not a directory)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{message} ({hint})" if hint else message)


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass
class Manifest:
    models: dict[str, list[FileEntry]] = field(default_factory=dict)

    def model_json(self, name: str) -> dict[str, Any]:
        files = self.models[name]
        versions = sorted({f.path.split("/")[1] for f in files if f.path.count("/") >= 2
                           and f.path.split("/")[1].isdigit()}, key=int)
        return {"name": name, "versions": versions, "files": [f.to_json() for f in files]}

    def to_json(self) -> dict[str, Any]:
        return {"schema": MANIFEST_SCHEMA, "models": [self.model_json(n) for n in sorted(self.models)]}

    def canonical(self) -> bytes:
        return canonical_json(self.to_json())

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.canonical()).hexdigest()

    def model_digest(self, name: str) -> str:
        return "sha256:" + hashlib.sha256(canonical_json(self.model_json(name))).hexdigest()

    def model_digests(self) -> dict[str, str]:
        return {name: self.model_digest(name) for name in sorted(self.models) if name != ROOT_FILES}

    def claims(self) -> dict[str, Any]:
        """The ``models`` claim of the RA-TLS certificate."""
        return {"manifest": self.digest, "models": self.model_digests()}




def _sha256_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _walk(root: Path) -> list[tuple[str, Path]]:
    """(relative posix path, real path) of every regular file, symlinks checked."""
    real_root = root.resolve()
    out: list[tuple[str, Path]] = []
    seen_dirs: set[Path] = set()

    def visit(directory: Path, rel: str) -> None:
        real_dir = directory.resolve()
        if real_dir in seen_dirs:
            raise ManifestError(f"symlink loop at {rel or '.'}")
        seen_dirs.add(real_dir)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            raise ManifestError(f"cannot list {directory}: {exc.strerror}") from None
        for entry in entries:
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            path = Path(entry.path)
            if entry.name == PYCACHE:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_size == 0:
                    continue  # a bytecode-cache blocker laid by snapshot_repository(): holds no code
                raise ManifestError(f"'{child_rel}' holds compiled bytecode, which Python may load instead of "
                                    "the measured source",
                                    hint="delete every __pycache__ directory in the model repository, then keep "
                                         "Triton from writing new ones (its python backend does on load): "
                                         "python -m triton_backend block-bytecode <repository>, or a read-only "
                                         "mount")
            try:
                target = path.resolve()
            except (OSError, RuntimeError):  # RuntimeError: Python's report of a symlink loop
                raise ManifestError(f"'{child_rel}' is a symlink loop") from None
            if entry.is_symlink() and target != real_root and real_root not in target.parents:
                raise ManifestError(f"'{child_rel}' is a symlink to {target}, outside the model repository",
                                    )
            try:
                mode = os.stat(path).st_mode
            except OSError as exc:
                raise ManifestError(f"cannot stat '{child_rel}': {exc.strerror}") from None
            if stat.S_ISDIR(mode):
                visit(path, child_rel)
            elif stat.S_ISREG(mode):
                out.append((child_rel, target))
            else:
                raise ManifestError(f"'{child_rel}' is neither a file nor a directory (devices, sockets and "
                                    "pipes are refused in a model repository)")
        seen_dirs.discard(real_dir)

    visit(root, "")
    return out


def build_manifest(repository: str | Path) -> Manifest:
    root = Path(repository)
    if not root.is_dir():
        raise ManifestError(f"model repository {root} is not a directory")
    manifest = Manifest()
    for rel, real in _walk(root):
        parts = rel.split("/")
        model = parts[0] if len(parts) > 1 else ROOT_FILES
        try:
            size, digest = _sha256_file(real)
        except OSError as exc:
            raise ManifestError(f"cannot read '{rel}': {exc.strerror}") from None
        manifest.models.setdefault(model, []).append(FileEntry(rel, size, digest))
    return manifest


@dataclass(frozen=True)
class StatSignature:
    """A cheap fingerprint of the repository's file metadata, to notice changes without
    re-hashing gigabytes; when it differs, re-measure with :func:`build_manifest`."""

    entries: tuple[tuple[str, int, int, int], ...]

    @classmethod
    def of(cls, repository: str | Path) -> StatSignature:
        rows = []
        for rel, real in _walk(Path(repository)):
            st = os.stat(real)
            rows.append((rel, st.st_size, st.st_mtime_ns, st.st_ino))
        return cls(tuple(rows))


def diff(old: Manifest, new: Manifest) -> list[str]:
    """Human-readable differences between two manifests (empty if identical)."""
    a = {f.path: f for files in old.models.values() for f in files}
    b = {f.path: f for files in new.models.values() for f in files}
    changes = [f"added {p}" for p in sorted(b.keys() - a.keys())]
    changes += [f"removed {p}" for p in sorted(a.keys() - b.keys())]
    changes += [f"changed {p}" for p in sorted(a.keys() & b.keys()) if a[p] != b[p]]
    return changes


class RepositoryWatch:
    """Detects a repository that changed after it was measured."""

    def __init__(self, repository: str | Path, manifest: Manifest | None = None) -> None:
        self.repository = Path(repository)
        # Fingerprint first, then hash: a change made while hashing then differs from the
        # fingerprint and is seen, instead of becoming part of the baseline unnoticed.
        self._signature = StatSignature.of(self.repository)
        self.manifest = manifest or build_manifest(self.repository)

    def describes(self, directory: str | Path) -> bool:
        """Whether *directory* holds the very files measured (same paths, inodes, sizes and mtimes,
        as a hard-linked snapshot does): then its manifest is this one, without hashing again."""
        try:
            return StatSignature.of(directory) == self._signature
        except ManifestError:
            return False

    def changes(self) -> list[str]:
        """[] if unchanged; otherwise what changed (content re-hashed only when metadata moved)."""
        try:
            signature = StatSignature.of(self.repository)
        except ManifestError as exc:
            return [str(exc)]
        if signature == self._signature:
            return []
        try:
            changes = diff(self.manifest, build_manifest(self.repository))
        except ManifestError as exc:
            return [str(exc)]
        if not changes:
            self._signature = signature  # only metadata moved (e.g. touch); remember it
        return changes


def snapshot_repository(source: str | Path, target: Path) -> Path:
    """Lay out the repository Triton will serve: every measured file hard-linked (copied
    across filesystems) under *target*, plus an empty ``__pycache__`` *file* in each
    directory, so the python backend can neither write nor read bytecode there (its embedded
    interpreter ignores PYTHONDONTWRITEBYTECODE). Its manifest equals the source's."""
    files = _walk(Path(source))
    target.mkdir(parents=True, exist_ok=False)
    dirs: set[Path] = {target}
    for rel, real in files:
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dirs.update([dest.parent, *[p for p in dest.parent.parents if target in p.parents]])
        try:
            os.link(real, dest)
        except OSError:
            shutil.copy2(real, dest)
    for directory in dirs:
        (directory / PYCACHE).touch()
    return target


def block_bytecode(repository: str | Path) -> list[Path]:
    """Lay an empty ``__pycache__`` *file* in every directory of *repository* that has none, as
    the managed snapshot does: Triton's python backend then can neither write nor read bytecode
    beside the measured sources, even as root (for whom a read-only mode is no obstacle). The
    manifest is unchanged. Returns the blockers laid; a ``__pycache__`` directory is refused."""
    root = Path(repository)
    _walk(root)  # refuses existing bytecode, symlinks leaving the tree, loops
    laid = []
    for directory, _subdirs, _files in os.walk(root):
        blocker = Path(directory) / PYCACHE
        if not blocker.exists():
            blocker.touch()
            laid.append(blocker)
    return laid
