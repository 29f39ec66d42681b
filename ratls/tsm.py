"""Linux configfs-tsm report interface (``/sys/kernel/config/tsm/report``), shared by every
TEE that the kernel exposes through it (SEV-SNP ``sev_guest``, TDX ``tdx_guest``).

Protocol: mkdir an entry, write ``inblob`` (64 bytes of report data), read ``outblob``
(the report or quote) and ``auxblob`` (SNP: certificate table), rmdir. ``generation``
counts writes to the entry; reading it before and after detects another writer racing
us, in which case the blob may belong to someone else's report_data.

File operations go through :class:`TsmFilesystem` so tests can drive the collector
against a fake directory tree whose "kernel side" is a small Python fake.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .errors import CollectionError

DEFAULT_ROOT = Path("/sys/kernel/config/tsm/report")


class TsmFilesystem:
    """Real filesystem operations; subclassed by the test fake."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def write(self, path: Path, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)

    def exists(self, path: Path) -> bool:
        return path.exists()


@dataclass(frozen=True)
class TsmReport:
    provider: str
    outblob: bytes
    auxblob: bytes | None
    generation: int


def available(root: Path = DEFAULT_ROOT) -> bool:
    return root.is_dir()


def collect_report(report_data: bytes, *, expected_provider: str, root: Path = DEFAULT_ROOT,
                   privlevel: int | None = None, fs: TsmFilesystem | None = None) -> TsmReport:
    """Produce one report through configfs-tsm, checking provider and generation."""
    fs = fs or TsmFilesystem()
    if len(report_data) != 64:
        raise CollectionError(f"report_data must be 64 bytes, got {len(report_data)}")
    if not fs.exists(root):
        raise CollectionError(f"configfs-tsm is not available at {root}",
                              hint="mount configfs (mount -t configfs none /sys/kernel/config) on a kernel >= 6.7 "
                                   "running in a confidential VM, or choose another collector")
    entry = root / f"ratls-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fs.mkdir(entry)
    except OSError as exc:
        raise CollectionError(f"cannot create report entry {entry}: {exc.strerror}",
                              hint="the process needs write access to configfs-tsm (root or CAP_SYS_ADMIN)") from None
    try:
        provider = _read_text(fs, entry / "provider")
        if provider != expected_provider:
            raise CollectionError(f"configfs-tsm provider is '{provider}', expected '{expected_provider}'",
                                  hint="this machine runs a different TEE than the one selected")
        if privlevel is not None:
            fs.write(entry / "privlevel", str(privlevel).encode())
        fs.write(entry / "inblob", report_data)
        before = _read_generation(fs, entry)
        outblob = fs.read(entry / "outblob")
        aux_path = entry / "auxblob"
        auxblob = fs.read(aux_path) if fs.exists(aux_path) else None
        after = _read_generation(fs, entry)
        if before != after:
            raise CollectionError(f"configfs-tsm entry changed while reading (generation {before} -> {after}); "
                                  "another writer raced this request", hint="retry; do not share report entries")
        if not outblob:
            raise CollectionError("configfs-tsm returned an empty report",
                                  hint="check dmesg for the guest driver error")
        return TsmReport(provider=provider, outblob=outblob, auxblob=auxblob or None, generation=after)
    except OSError as exc:
        raise CollectionError(f"configfs-tsm I/O failed on {exc.filename}: {exc.strerror}",
                              hint="check dmesg; the guest driver or host may have refused the request") from None
    finally:
        try:
            fs.rmdir(entry)
        except OSError:
            pass


def _read_text(fs: TsmFilesystem, path: Path) -> str:
    return fs.read(path).decode("ascii", "replace").strip()


def _read_generation(fs: TsmFilesystem, entry: Path) -> int:
    text = _read_text(fs, entry / "generation")
    try:
        return int(text)
    except ValueError:
        raise CollectionError(f"configfs-tsm generation is not a number: {text!r}") from None
