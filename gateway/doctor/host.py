"""Everything ``ratls doctor`` asks of the machine, behind :class:`Host` (tests inject a fake
device tree, fake sockets and a fixed clock)."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from ratls.errors import ConfigError
from ratls.platforms.azure.collect import Runner, run_tpm2
from ratls.platforms.snp.abi import Product
from ratls.platforms.snp.certs import ProductRoots, shipped_roots
from ratls.platforms.tdx.verify import shipped_root
from ratls.timeutil import utcnow
from ratls.tsm import TsmFilesystem
from triton_backend import hardening
from triton_backend.demo import demo_repository
from triton_backend.hardening import HardeningReport
from triton_backend.locate import TritonInstall, locate

from ..ports import bind_error

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


def _pynvml() -> Any:
    from ratls.platforms.nvidia.collect import PynvmlApi
    return PynvmlApi()


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
    nvml: Callable[[], Any] = _pynvml  # the NVML interface GPU attestation uses (tests: a recording)

    def path(self, path: str | Path) -> Path:
        p = Path(path)
        return self.root / p.relative_to(p.anchor) if p.is_absolute() else self.root / p


def default_host() -> Host:
    return Host()
