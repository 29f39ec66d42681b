"""``ratls doctor``: diagnose the confidential VM, Triton and the gateway config before (or
instead of guessing why) ``ratls serve`` refuses to start.

Each check is a small function returning :class:`Finding`s; everything that touches the
machine goes through :class:`Host`, so tests drive the checks against a fake device tree
(``Host.root``), fake sockets and a fixed clock. A failed check is a diagnosis, not a
security verdict: the command exits 2, never 1 (which the ``ratls`` CLI keeps for verdicts).
"""

from __future__ import annotations

import argparse
import errno
import grp
import json
import os
import pwd
import secrets
import shutil
import socket
import ssl
import stat
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509

from ratls.errors import ConfigError, RatlsError, UsageError
from ratls.platforms.azure.collect import Runner, run_tpm2
from ratls.platforms.snp.abi import Product
from ratls.platforms.snp.certs import PINNED_FINGERPRINTS, ProductRoots, shipped_roots
from ratls.platforms.tdx.verify import INTEL_ROOT_SHA256, shipped_root
from ratls.timeutil import utcnow
from ratls.tsm import TsmFilesystem
from ratls.x509util import fingerprint
from triton_backend import hardening
from triton_backend.demo import demo_repository
from triton_backend.hardening import HardeningReport
from triton_backend.locate import TritonInstall, TritonNotFound, locate
from triton_backend.manifest import PYCACHE, ManifestError, build_manifest

from .config import GatewayConfig, load_config
from .platform_detect import PROVIDERS, SEV_GUEST_DEVICE, TDX_GUEST_DEVICE, TPM_DEVICE, detect
from .ports import bind_error

EXIT_OK, EXIT_FAILED = 0, 2
# The earliest instant this release can have been built (bump it with ratls.__version__): a
# clock before it cannot be right, even when it is after every bundled root's not-before.
RELEASE_NOT_BEFORE = datetime(2026, 12, 1, tzinfo=UTC)
SKEW_WARN = timedelta(seconds=60)
SKEW_FAIL = timedelta(minutes=5)
SIMULATED = ("sim", "sim-tdx")
TSM_PROVIDER_OF = {platform: provider for provider, platform in PROVIDERS.items()}
EXAMPLES = 5  # paths named in a message; the rest are counted


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    name: str
    status: Status
    message: str
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.value, "message": self.message, "hint": self.hint}


def ok(name: str, message: str) -> Finding:
    return Finding(name, Status.OK, message)


def warn(name: str, message: str, hint: str | None = None) -> Finding:
    return Finding(name, Status.WARN, message, hint)


def fail(name: str, message: str, hint: str | None = None) -> Finding:
    return Finding(name, Status.FAIL, message, hint)


def _examples(items: list[str]) -> str:
    shown = ", ".join(items[:EXAMPLES])
    return shown + (f" and {len(items) - EXAMPLES} more" if len(items) > EXAMPLES else "")


# ---- the machine, behind one injectable interface ----

@dataclass(frozen=True)
class Identity:
    """A user as the kernel checks permissions: uid and every group it holds."""

    uid: int
    gids: frozenset[int] = frozenset()

    @classmethod
    def current(cls) -> Identity:
        return cls(os.getuid(), frozenset({os.getgid(), *os.getgroups()}))

    @property
    def name(self) -> str:
        try:
            return f"{pwd.getpwuid(self.uid).pw_name} (uid {self.uid})"
        except KeyError:
            return f"uid {self.uid}"

    @property
    def login(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return str(self.uid)


def _open_read_write(path: Path) -> None:
    # Opening is enough to prove access: no ioctl is issued, so no report is requested.
    os.close(os.open(path, os.O_RDWR))


def _tcp_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return True
    except OSError:
        return False


def https_date(url: str, timeout: float = 5.0) -> datetime:
    """The ``Date`` header of an HTTPS server (any status: error pages carry it too)."""
    request = urllib.request.Request(url, method="HEAD")  # noqa: S310 - the scheme is checked to be https
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            header = resp.headers.get("Date")
    except urllib.error.HTTPError as exc:
        header = exc.headers.get("Date")
    if not header:
        raise ConfigError(f"{url} sent no Date header", hint="name another HTTPS server")
    when = parsedate_to_datetime(header)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)  # "-0000" parses naive


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


@dataclass
class Host:
    root: Path = Path("/")  # device and kernel paths are looked up under it (tests: a fake tree)
    user: Identity = field(default_factory=Identity.current)
    open_device: Callable[[Path], None] = _open_read_write
    tsm_fs: TsmFilesystem = field(default_factory=TsmFilesystem)
    run_tpm2: Runner = run_tpm2
    which: Callable[[str], str | None] = shutil.which
    bind: Callable[[str, int], OSError | None] = bind_error
    connect: Callable[[str, int], bool] = _tcp_answers
    hardening_check: Callable[[str, list[int]], HardeningReport] = hardening.check
    locate_triton: Callable[[str | None], TritonInstall] = locate
    demo_repository: Callable[[], Path] = demo_repository
    fetch_date: Callable[[str], datetime] = https_date
    now: Callable[[], datetime] = utcnow
    amd_roots: Callable[[], dict[Product, ProductRoots]] = shipped_roots
    intel_root: Callable[[], x509.Certificate] = shipped_root
    group_name: Callable[[int], str] = _group_name

    def path(self, path: str | Path) -> Path:
        p = Path(path)
        return self.root / p.relative_to(p.anchor) if p.is_absolute() else self.root / p


def default_host() -> Host:
    return Host()


# ---- TEE ----

def check_platform(configured: str, detected: str | None, error: RatlsError | None) -> Finding:
    if configured in SIMULATED:
        here = f"; this VM is a {detected} guest" if detected else ""
        return warn("tee.platform", f"identity.platform is '{configured}': SIMULATED platform, the certificates "
                    f"carry NO hardware evidence and no production policy accepts them{here}",
                    hint=f"for production set identity.platform: auto (or {detected or 'the TEE name'}) on the "
                         "confidential VM; keep sim for development")
    if detected is None:
        message = error.message if error else "no TEE detected"
        return fail("tee.platform", message, hint=error.hint if error else None)
    if configured == "auto":
        return ok("tee.platform", f"detected {detected} (identity.platform: auto)")
    if configured != detected:
        return fail("tee.platform", f"identity.platform is '{configured}' but this VM is a {detected} guest",
                    hint=f"set identity.platform: {detected} (or auto)")
    return ok("tee.platform", f"detected {detected}, as configured")


@dataclass(frozen=True)
class DeviceState:
    path: Path
    exists: bool
    error: OSError | None = None  # why opening it read-write failed
    mode: int = 0
    group: str | None = None


def probe_device(path: Path, host: Host) -> DeviceState:
    try:
        st = os.stat(path)
    except OSError:
        return DeviceState(path, exists=False)
    try:
        host.open_device(path)
    except OSError as exc:
        return DeviceState(path, True, exc, stat.S_IMODE(st.st_mode), host.group_name(st.st_gid))
    return DeviceState(path, True, None, stat.S_IMODE(st.st_mode), host.group_name(st.st_gid))


def _access_hint(device: DeviceState, user: Identity) -> str:
    if device.group and device.group != "root" and device.mode & 0o060:
        return (f"run as root or add the user to group {device.group} "
                f"(usermod -aG {device.group} {user.login}, then log in again)")
    return (f"run as root, or grant a group access with a udev rule (GROUP=\"<group>\", MODE=\"0660\" for "
            f"{device.path.name}) and add {user.login} to that group")


def check_device(name: str, device: DeviceState, user: Identity) -> Finding:
    if not device.exists:
        return fail(name, f"{device.path} does not exist")
    if device.error is None:
        return ok(name, f"{device.path} present and opens read-write for {user.name}")
    if device.error.errno in (errno.EACCES, errno.EPERM):
        return fail(name, f"{device.path} exists but {user.name} cannot open it (mode {device.mode:04o}, "
                    f"group {device.group})", hint=_access_hint(device, user))
    return fail(name, f"{device.path} exists but does not open: {device.error.strerror}",
                hint="the guest driver may not be loaded or working; see dmesg")


@dataclass(frozen=True)
class TsmState:
    root: Path
    exists: bool
    error: OSError | None = None  # creating (or reading) a report entry failed
    provider: str | None = None


def probe_tsm(root: Path, fs: TsmFilesystem) -> TsmState:
    """Create and remove one report entry, as evidence collection does: configfs-tsm's
    directory can be present but not writable (a container without CAP_SYS_ADMIN)."""
    if not root.is_dir():
        return TsmState(root, exists=False)
    entry = root / f"ratls-doctor-{secrets.token_hex(4)}"  # never an entry a crashed run left behind
    try:
        fs.mkdir(entry)
    except OSError as exc:
        return TsmState(root, True, exc)
    try:
        return TsmState(root, True, provider=fs.read(entry / "provider").decode(errors="replace").strip())
    except OSError as exc:
        return TsmState(root, True, exc)
    finally:
        try:
            fs.rmdir(entry)
        except OSError:
            pass


def check_tsm(tsm: TsmState, expected_provider: str | None, user: Identity, *, required: bool) -> Finding:
    name = "tee.configfs-tsm"
    if not tsm.exists:
        message = f"{tsm.root} does not exist (configfs-tsm is not mounted or not in this kernel)"
        hint = ("mount configfs (mount -t configfs none /sys/kernel/config) on a guest kernel >= 6.7 with "
                "CONFIG_TSM_REPORTS; in a container, mount the host's configfs and set identity.tsm_root")
        return fail(name, message, hint) if required else warn(name, message + "; using the legacy device", hint)
    if tsm.error is not None:
        return fail(name, f"{tsm.root} is not writable by {user.name}: {tsm.error.strerror}",
                    hint="run as root or with CAP_SYS_ADMIN (a container needs the host's configfs mounted "
                         "read-write)")
    if expected_provider is not None and tsm.provider != expected_provider:
        return fail(name, f"configfs-tsm provider is '{tsm.provider}', expected '{expected_provider}'",
                    hint="this machine runs a different TEE than identity.platform names")
    return ok(name, f"{tsm.root} mounted and writable (provider {tsm.provider})")


def check_tpm_tools(which: Callable[[str], str | None]) -> Finding:
    missing = [tool for tool in ("tpm2_nvread", "tpm2_quote") if which(tool) is None]
    if missing:
        return fail("tee.tpm2-tools", f"{', '.join(missing)} not found on PATH (the vTPM evidence is read with "
                    "tpm2-tools)", hint="install tpm2-tools (apt install tpm2-tools)")
    return ok("tee.tpm2-tools", "tpm2_nvread and tpm2_quote found")


def _detect(cfg: GatewayConfig, host: Host) -> tuple[str | None, RatlsError | None]:
    try:
        return detect(tsm_root=host.path(cfg.identity.tsm_root), sev_device=host.path(SEV_GUEST_DEVICE),
                      tdx_device=host.path(TDX_GUEST_DEVICE), fs=host.tsm_fs, tpm_device=host.path(TPM_DEVICE),
                      run=host.run_tpm2), None
    except RatlsError as exc:
        return None, exc


def tee_findings(cfg: GatewayConfig, host: Host) -> list[Finding]:
    configured = cfg.identity.platform
    detected, error = _detect(cfg, host)
    findings = [check_platform(configured, detected, error)]
    platform = detected if configured == "auto" else configured
    if platform is None or platform in SIMULATED:
        return findings  # nothing to collect from (sim), or nothing found: the finding above says so
    if platform.startswith("azure-"):
        return [*findings, check_device("tee.vtpm", probe_device(host.path(TPM_DEVICE), host), host.user),
                check_tpm_tools(host.which)]
    tsm = probe_tsm(host.path(cfg.identity.tsm_root), host.tsm_fs)
    if platform == "tdx":
        # TDX quotes come only through configfs-tsm; /dev/tdx_guest itself is never opened.
        return [*findings, check_tsm(tsm, TSM_PROVIDER_OF["tdx"], host.user, required=True)]
    if tsm.exists:  # collection uses configfs-tsm whenever it is there, without falling back
        return [*findings, check_tsm(tsm, TSM_PROVIDER_OF["sev-snp"], host.user, required=True)]
    sev = probe_device(host.path(SEV_GUEST_DEVICE), host)
    return [*findings, check_tsm(tsm, None, host.user, required=not sev.exists),
            check_device("tee.sev-guest", sev, host.user)]


# ---- Triton ----

def check_triton_binary(binary: str | None, locate_fn: Callable[[str | None], TritonInstall]) -> Finding:
    try:
        install = locate_fn(binary)
    except TritonNotFound as exc:
        return fail("triton.binary", str(exc), hint="set triton.binary to the tritonserver path, run in the NGC "
                    "Triton image, or pip install nvidia-pytriton")
    return ok("triton.binary", f"tritonserver {install.binary} (from {install.source})")


def check_external_triton(cfg: GatewayConfig, report: HardeningReport, grpc_answers: bool) -> list[Finding]:
    t = cfg.triton
    url = f"http://{t.host}:{t.http_port}"
    refuse = t.on_exposed == "refuse"
    problem = fail if refuse else warn
    consequence = "ratls serve refuses to start" if refuse else "ratls serve only warns (triton.on_exposed: warn)"
    grpc = (ok("triton.grpc", f"gRPC port {t.host}:{t.grpc_port} accepts connections") if grpc_answers else
            fail("triton.grpc", f"nothing accepts connections on {t.host}:{t.grpc_port}",
                 hint="start Triton with --grpc-port matching triton.grpc_port"))
    if not report.answered:
        return [fail("triton.http", f"Triton does not answer at {url}",
                     hint=f"start Triton listening on {t.host}:{t.http_port}, or correct triton.host/http_port"),
                grpc]
    findings = [ok("triton.http", f"Triton {report.version or '(version unknown)'} answers at {url}"), grpc]
    if report.model_control == "disabled":
        findings.append(ok("triton.model-control", "the model load/unload API is refused (model control none)"))
    else:
        detail = ("clients can load and unload models after attestation" if report.model_control == "explicit"
                  else "the model-control probe was inconclusive")
        findings.append(problem("triton.model-control", f"model control '{report.model_control}': {detail}; "
                                f"{consequence}", hint="start Triton with --model-control-mode=none"))
    bound = "; ".join(f"{port}: {', '.join(addrs) or 'no listener seen'}"
                      for port, addrs in sorted(report.listen_addresses.items()))
    if report.exposed:
        findings.append(problem("triton.listeners", f"reachable beyond loopback: {', '.join(report.exposed)} "
                                f"({consequence})", hint="start Triton with --http-address 127.0.0.1 "
                                "--grpc-address 127.0.0.1 --metrics-address 127.0.0.1"))
    else:
        findings.append(ok("triton.listeners", f"loopback only ({bound})"))
    return findings


def socket_owner(inodes: Iterable[int], proc: Path) -> Identity | None:
    """The user of the process holding one of these sockets, from /proc (root sees every
    process; anyone else only their own)."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    if not wanted:
        return None
    try:
        pids = [p for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            links = {os.readlink(fd) for fd in (pid / "fd").iterdir()}
            if links & wanted:
                return _identity_from_status((pid / "status").read_text())
        except OSError:
            continue  # exited meanwhile, or not ours to look at
    return None


def _identity_from_status(text: str) -> Identity | None:
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        uid = int(fields["Uid"].split()[1])  # the effective uid is what the kernel checks
        gids = {int(fields["Gid"].split()[1]), *(int(g) for g in fields.get("Groups", "").split())}
    except (KeyError, IndexError, ValueError):
        return None
    return Identity(uid, frozenset(gids))


def triton_findings(cfg: GatewayConfig, host: Host) -> tuple[list[Finding], Identity | None]:
    """The findings, and the user Triton runs as (None: not known)."""
    t = cfg.triton
    if t.mode == "managed":
        # the gateway starts Triton itself, as the user it runs as
        return [check_triton_binary(t.binary, host.locate_triton)], host.user
    report = host.hardening_check(f"http://{t.host}:{t.http_port}", [t.http_port, t.grpc_port])
    findings = check_external_triton(cfg, report, host.connect(t.host, t.grpc_port))
    return findings, socket_owner(report.listeners, host.path("/proc"))


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


# ---- ports ----

def planned_ports(cfg: GatewayConfig) -> list[tuple[str, str, int]]:
    """(name, address, port) of every TCP port ``ratls serve`` binds itself."""
    ports = [("port.listen", cfg.listen.address, cfg.listen.port),
             ("port.operator", cfg.control.metrics_address, cfg.control.metrics_port)]
    t = cfg.triton
    if t.mode == "managed":  # 0 means a free port is chosen at start-up; external ports are Triton's own
        ports += [(f"port.triton-{kind}", "127.0.0.1", port)
                  for kind, port in (("http", t.http_port), ("grpc", t.grpc_port), ("metrics", t.metrics_port))
                  if port]
    return ports


def check_port(name: str, address: str, port: int, error: OSError | None) -> Finding:
    where = f"{address}:{port}"
    if error is None:
        return ok(name, f"{where} is free")
    if error.errno == errno.EADDRINUSE:
        return fail(name, f"port {port} ({where}) is already bound by another process",
                    hint=f"find it with ss -ltnp 'sport = :{port}' and stop it, or choose another port in the config "
                         "(a ratls serve already running holds it too)")
    if error.errno == errno.EACCES:
        return fail(name, f"binding port {port} ({where}) is not permitted for this user",
                    hint="use a port >= 1024, or grant CAP_NET_BIND_SERVICE")
    if error.errno == errno.EADDRNOTAVAIL:
        return fail(name, f"{address} is not an address of this host", hint="correct the address in the config")
    return fail(name, f"cannot bind {where}: {error.strerror}")


def port_findings(cfg: GatewayConfig, host: Host) -> list[Finding]:
    ports = planned_ports(cfg)
    findings: list[Finding] = []
    seen: dict[int, str] = {}
    for name, address, port in ports:
        if port in seen:  # the second bind would fail at start-up whatever else runs here
            findings.append(fail(name, f"port {port} is configured twice ({seen[port]} and {name})",
                                 hint="give each listener its own port"))
            continue
        seen[port] = name
        findings.append(check_port(name, address, port, host.bind(address, port)))
    return findings


# ---- clock and vendor roots ----

@dataclass
class VendorRoots:
    amd: dict[Product, ProductRoots] | None = None
    amd_error: str | None = None
    intel: x509.Certificate | None = None
    intel_error: str | None = None


def load_vendor_roots(host: Host) -> VendorRoots:
    roots = VendorRoots()
    try:
        roots.amd = host.amd_roots()
    except (RatlsError, OSError) as exc:
        roots.amd_error = str(exc)
    try:
        roots.intel = host.intel_root()
    except (RatlsError, OSError, ValueError) as exc:
        roots.intel_error = str(exc)
    return roots


def check_vendor_roots(roots: VendorRoots) -> list[Finding]:
    hint = "the installation is damaged or was tampered with; reinstall ratls-gateway"
    findings: list[Finding] = []
    if roots.amd is None:
        findings.append(fail("roots.amd", f"the bundled AMD roots do not load: {roots.amd_error}", hint))
    else:
        for product in Product:
            findings.append(_check_amd_product(product, roots.amd.get(product), hint))
    if roots.intel is None:
        findings.append(fail("roots.intel", f"the bundled Intel SGX Root CA does not load: {roots.intel_error}", hint))
    elif fingerprint(roots.intel) != INTEL_ROOT_SHA256:
        findings.append(fail("roots.intel", "the bundled Intel SGX Root CA does not match the pinned fingerprint",
                             hint))
    else:
        findings.append(ok("roots.intel", f"Intel SGX Root CA matches the pin (sha256 {INTEL_ROOT_SHA256[:16]}…)"))
    return findings


def _check_amd_product(product: Product, roots: ProductRoots | None, hint: str) -> Finding:
    name = f"roots.amd-{product.value}"
    if roots is None:
        return fail(name, f"no bundled AMD roots for {product.title}", hint)
    certs = {"ark": roots.ark, "ask": roots.ask, "asvk": roots.asvk}
    wrong = [role.upper() for role, cert in certs.items()
             if cert is None or fingerprint(cert) != PINNED_FINGERPRINTS[(product, role)]]
    if wrong:
        return fail(name, f"AMD {product.title} {'/'.join(wrong)} do not match the pinned fingerprints", hint)
    ark = PINNED_FINGERPRINTS[(product, "ark")]
    return ok(name, f"AMD {product.title} ARK/ASK/ASVK match the pins (ARK sha256 {ark[:16]}…)")


def clock_bounds(roots: VendorRoots) -> tuple[list[tuple[str, datetime]], list[tuple[str, datetime]]]:
    """(not-before, not-after) of every loaded root, plus this release as a not-before."""
    certs: list[tuple[str, x509.Certificate]] = []
    for product, pr in (roots.amd or {}).items():
        certs += [(f"AMD {product.title} {role}", c) for role, c in (("ARK", pr.ark), ("ASK", pr.ask),
                                                                      ("ASVK", pr.asvk)) if c is not None]
    if roots.intel is not None:
        certs.append(("Intel SGX Root CA", roots.intel))
    floors = [(label, c.not_valid_before_utc) for label, c in certs]
    floors.append(("this ratls release", RELEASE_NOT_BEFORE))
    return floors, [(label, c.not_valid_after_utc) for label, c in certs]


def check_clock(now: datetime, floors: list[tuple[str, datetime]],
                ceilings: list[tuple[str, datetime]]) -> Finding:
    hint = "set the clock (timedatectl set-ntp true, or chronyc makestep) and check the guest's time source"
    shown = f"{now:%Y-%m-%d %H:%M:%S} UTC"
    early = sorted((when, label) for label, when in floors if now < when)
    if early:
        labels = [label for _, label in early]
        return fail("clock", f"the system clock says {shown}, before the not-before of {_examples(labels)} "
                    f"(up to {early[-1][0]:%Y-%m-%d}): every certificate would look not yet valid", hint)
    expired = sorted(label for label, when in ceilings if now > when)
    if expired:
        return fail("clock", f"the system clock says {shown}, after the not-after of {_examples(expired)}", hint)
    return ok("clock", f"{shown} is after every bundled root's not-before and this release")


def check_skew(local: datetime, remote: datetime, url: str) -> Finding:
    skew = local - remote
    seconds = abs(skew.total_seconds())
    message = (f"the system clock is {seconds:.0f} s {'ahead of' if skew > timedelta(0) else 'behind'} the Date "
               f"header of {url}")
    hint = "synchronise the clock (timedatectl set-ntp true, or chronyc makestep)"
    if abs(skew) > SKEW_FAIL:
        return fail("clock.skew", message, hint)
    if abs(skew) > SKEW_WARN:
        return warn("clock.skew", message, hint)
    return ok("clock.skew", message)


def measure_skew(url: str, fetch: Callable[[str], datetime], now: Callable[[], datetime]) -> Finding:
    before = now()
    try:
        remote = fetch(url)
    except (OSError, ValueError, TypeError, RatlsError) as exc:
        reason = getattr(exc, "reason", exc)
        hint = "check the URL and the network; any HTTPS server that sends a Date header will do"
        if isinstance(reason, ssl.SSLCertVerificationError) and ("not yet valid" in str(reason)
                                                                  or "expired" in str(reason)):
            hint = "its certificate looks not yet valid or expired from here: the local clock is probably wrong"
        return fail("clock.skew", f"cannot read the time from {url}: {reason}", hint)
    after = now()
    # the server stamped its answer somewhere between our two readings: compare with the midpoint
    return check_skew(before + (after - before) / 2, remote, url)


# ---- rate limits ----

def _rate(limit: Any) -> str:
    return f"{limit.requests_per_second:g}/s burst {limit.burst}" if limit is not None else "none"


def check_rate_limits(cfg: GatewayConfig) -> Finding:
    policy = cfg.filter_policy
    c = cfg.control
    evidence = (f"fresh evidence {c.evidence_rate_per_second:g}/s burst {c.evidence_burst} per client address "
                "(control.evidence_rate_per_second/evidence_burst)")
    if policy is None:
        return ok("rate-limits", evidence)
    limits = policy.limits
    requests = f"requests: total {_rate(limits.rate_limit)}, per client {_rate(limits.per_client_rate_limit)}"
    configured = limits.rate_limit is not None or limits.per_client_rate_limit is not None
    if not policy.enabled and configured:
        return warn("rate-limits", f"{requests} are NOT applied (filters.enabled: false); {evidence}",
                    hint="enable filters, or remove filters.limits.rate_limit/per_client_rate_limit")
    if policy.enabled and limits.per_client_rate_limit is not None:
        return warn("rate-limits", f"{requests}; {evidence}: a per-client request cap is set, and one application "
                    "server behind NAT (or a load balancer) shares one address, so all its requests share the cap",
                    hint="prefer filters.limits.rate_limit (total), or size per_client_rate_limit for the busiest "
                         "address")
    return ok("rate-limits", f"{requests}; {evidence}")


# ---- runner and command ----

def run_checks(cfg: GatewayConfig, host: Host, *, time_url: str | None = None) -> list[Finding]:
    findings = [ok("config", f"{cfg.source} loads (identity.platform {cfg.identity.platform}, "
                   f"triton.mode {cfg.triton.mode})")]
    findings += tee_findings(cfg, host)
    triton, triton_user = triton_findings(cfg, host)
    findings += triton
    findings += repository_findings(cfg, host, triton_user)
    findings += port_findings(cfg, host)
    roots = load_vendor_roots(host)
    findings.append(check_clock(host.now(), *clock_bounds(roots)))
    if time_url:
        findings.append(measure_skew(time_url, host.fetch_date, host.now))
    findings += check_vendor_roots(roots)
    findings.append(check_rate_limits(cfg))
    return findings


def exit_code(findings: list[Finding]) -> int:
    return EXIT_FAILED if any(f.status is Status.FAIL for f in findings) else EXIT_OK


LABELS = {Status.OK: "ok", Status.WARN: "WARN", Status.FAIL: "FAIL"}


def render_text(findings: list[Finding]) -> str:
    lines: list[str] = []
    for f in findings:
        lines.append(f"{LABELS[f.status]:<4}  {f.name}: {f.message}")
        if f.hint:
            lines.append(f"      hint: {f.hint}")
    counts = {s: sum(f.status is s for f in findings) for s in Status}
    warnings = counts[Status.WARN]
    lines.append(f"{counts[Status.FAIL]} failed, {warnings} warning{'' if warnings == 1 else 's'}, "
                 f"{counts[Status.OK]} ok")
    return "\n".join(lines)


def add_doctor_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Check the confidential VM, Triton, the model repository, ports, clock and bundled vendor roots "
                     "against the gateway config, before 'ratls serve'.")
    p.epilog = ("exit status: 0 when no check failed (warnings allowed), 2 when a check failed or the config does "
                "not load. A failed check is a diagnosis, not a security verdict, so exit 1 is never used.")
    p.add_argument("-c", "--config", metavar="FILE", help="gateway YAML (default: the embedded config/gateway.yaml)")
    p.add_argument("--json", action="store_true", help="print the findings as a JSON list")
    p.add_argument("--time-url", metavar="URL",
                   help="also compare the clock with the Date header of this HTTPS server "
                        f"(warn above {SKEW_WARN.seconds} s, fail above {SKEW_FAIL.seconds // 60} min)")


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.time_url and not args.time_url.startswith("https://"):
        raise UsageError(f"--time-url '{args.time_url}' is not an https:// URL",
                         hint="a plain-HTTP Date header can be forged by anyone on the path")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        findings = [fail("config", exc.message, exc.hint)]
    else:
        findings = run_checks(cfg, default_host(), time_url=args.time_url)
    if args.json:
        print(json.dumps([f.to_json() for f in findings], indent=2))
    else:
        print(render_text(findings))
    sys.stdout.flush()
    return exit_code(findings)
