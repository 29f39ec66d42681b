"""``ratls doctor``'s model repository checks: present, measurable, no bytecode, no escaping
symlinks, not writable by Triton."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from triton_backend.manifest import PYCACHE, ManifestError, build_manifest

from ..config import GatewayConfig
from .findings import Finding, _examples, fail, ok, warn
from .host import Host, Identity

# ---- model repository ----

@dataclass
class RepoScan:
    root: Path
    error: str | None = None  # not a directory, or unreadable
    models: set[str] = field(default_factory=set)
    bytecode: list[str] = field(default_factory=list)  # __pycache__ entries that are not blockers
    escaping: list[str] = field(default_factory=list)  # "rel -> target" of symlinks leaving the tree
    # (relative path, stat, on a read-only mount) of the root and every directory and file
    entries: list[tuple[str, os.stat_result, bool]] = field(default_factory=list)


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _visit_entry(scan: RepoScan, real_root: Path, directory: Path, rel_dir: str, name: str, read_only: bool) -> bool:
    """Record one directory entry; True when the walk should descend into it."""
    path = directory / name
    rel = f"{rel_dir}/{name}" if rel_dir else name
    st = path.lstat()
    if name == PYCACHE:
        # an empty regular file is the blocker the managed snapshot lays; anything else may hold bytecode
        if not (stat.S_ISREG(st.st_mode) and st.st_size == 0):
            scan.bytecode.append(rel)
        return False
    if stat.S_ISLNK(st.st_mode):
        try:
            target = path.resolve()
        except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
            scan.escaping.append(f"{rel} -> (symlink loop)")
            return False
        if target != real_root and real_root not in target.parents:
            scan.escaping.append(f"{rel} -> {target}")
        elif "/" not in rel and target.is_dir():
            scan.models.add(name)
        return False  # a target inside the tree is visited where it lives
    scan.entries.append((rel, st, read_only))
    if stat.S_ISREG(st.st_mode) and "/" in rel:
        scan.models.add(rel.split("/", 1)[0])
    return stat.S_ISDIR(st.st_mode)


def scan_repository(root: Path) -> RepoScan:
    scan = RepoScan(root)
    if not root.is_dir():
        scan.error = f"{root} is not a directory" if root.exists() else f"{root} does not exist"
        return scan
    real_root = root.resolve()
    pending: list[tuple[Path, str]] = [(root, "")]
    scan.entries.append(("", root.stat(), _read_only_mount(root)))
    while pending:
        directory, rel_dir = pending.pop()
        read_only = _read_only_mount(directory)
        try:
            names = sorted(os.listdir(directory))
            for name in names:
                if _visit_entry(scan, real_root, directory, rel_dir, name, read_only):
                    pending.append((directory / name, f"{rel_dir}/{name}" if rel_dir else name))
        except OSError as exc:
            scan.error = f"cannot read {directory}: {exc.strerror}"
            return scan
    return scan


def writable_by(st: os.stat_result, user: Identity, read_only_mount: bool) -> bool:
    """Mode bits and read-only mounts, as the kernel checks them (ACLs are not considered)."""
    if read_only_mount:
        return False
    if user.uid == 0:
        return True  # root ignores mode bits: only a read-only mount stops it
    if st.st_uid == user.uid:
        return bool(st.st_mode & stat.S_IWUSR)
    if st.st_gid in user.gids:
        return bool(st.st_mode & stat.S_IWGRP)
    return bool(st.st_mode & stat.S_IWOTH)


def check_repository_present(scan: RepoScan, source: str) -> Finding:
    if scan.error is not None:
        return fail("repository", f"model repository ({source}): {scan.error}",
                    hint="point triton.model_repository at the directory Triton loads its models from")
    if not scan.models:
        return fail("repository", f"the model repository {scan.root} holds no models",
                    hint="point triton.model_repository at the directory Triton loads its models from (one "
                         "directory per model); an unmounted volume looks like this")
    return ok("repository", f"{scan.root} ({source}): {len(scan.models)} models: {_examples(sorted(scan.models))}")


def _read_only_hint(repo: Path) -> str:
    return (f"make {repo} read-only to Triton: a read-only bind mount (mount --bind -o ro, or ':ro' on a container "
            f"volume; it also binds root), chmod -R a-w {repo} when Triton does not run as root, or "
            f"python -m triton_backend block-bytecode {repo} (empty __pycache__ files, even for root)")


def check_bytecode(scan: RepoScan) -> Finding:
    if not scan.bytecode:
        return ok("repository.bytecode", "no __pycache__ in the repository")
    return fail("repository.bytecode", f"__pycache__ in the model repository: {_examples(scan.bytecode)}; compiled "
                "bytecode would run instead of the measured source, so the gateway refuses to measure it",
                hint=f"delete them (find {scan.root} -name {PYCACHE} -exec rm -rf {{}} +) and "
                     f"{_read_only_hint(scan.root)}, since Triton's python backend writes bytecode on load even "
                     "with PYTHONDONTWRITEBYTECODE")


def check_symlinks(scan: RepoScan) -> Finding:
    if not scan.escaping:
        return ok("repository.symlinks", "no symlink leaves the repository")
    return fail("repository.symlinks", f"symlinks leave the repository: {_examples(scan.escaping)} (unmeasured files "
                "could be served, so the gateway refuses them)",
                hint="copy the targets into the repository, or point the links inside it")


def check_writable(scan: RepoScan, user: Identity | None, fallback: Identity, mode: str) -> Finding:
    who = user or fallback
    unknown = "" if user is not None else (" (Triton's user is unknown: run doctor as root to find it; checked "
                                           f"for {fallback.name} instead)")
    writable = [rel or "." for rel, st, read_only in scan.entries if writable_by(st, who, read_only)]
    if not writable:
        return ok("repository.writable", f"not writable by {who.name}{unknown}")
    where = "the source of the snapshot Triton serves" if mode == "managed" else "what Triton loads"
    return warn("repository.writable", f"{len(writable)} paths writable by {who.name}, e.g. {_examples(writable)} "
                f"({where}){unknown}: a repository that changes after attestation makes the gateway unready "
                "(triton.on_repository_change)", hint=_read_only_hint(scan.root))


def repository_findings(cfg: GatewayConfig, host: Host, triton_user: Identity | None) -> list[Finding]:
    t = cfg.triton
    if t.model_repository:
        repo, source = Path(t.model_repository), "triton.model_repository"
    elif t.mode == "managed":
        repo, source = host.demo_repository(), "the packaged demo models"
    else:
        return [warn("repository", "triton.model_repository is not set: the certificate will not measure the "
                     "models the external Triton serves", hint="set triton.model_repository to Triton's "
                     "--model-repository to attest it")]
    scan = scan_repository(repo)
    present = check_repository_present(scan, source)
    if scan.error is not None:
        return [present]
    return [present, check_bytecode(scan), check_symlinks(scan), check_measurable(repo),
            check_writable(scan, triton_user, host.user, t.mode)]


def check_measurable(repo: Path) -> Finding:
    """The gateway's own measurement, whatever the checks above look at: what it refuses (a FIFO,
    a device node, an unreadable file...) fails here exactly as it would fail `ratls serve`."""
    try:
        manifest = build_manifest(repo)
    except ManifestError as exc:
        return fail("repository.measurable", f"the gateway cannot measure {repo}: {exc}",
                    hint="fix what the message names; `python -m triton_backend manifest` shows the same")
    return ok("repository.measurable", f"manifest {manifest.digest}")
