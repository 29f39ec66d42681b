"""The gateway's private directory (unix sockets, bootstrap, logs): control.run_dir, or a
temporary directory removed at shutdown."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ratls.errors import ConfigError


class RunDir:
    def __init__(self, configured: str | None) -> None:
        self.configured = configured
        self.path: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def create(self) -> Path:
        """The directory, made 0700 (created when needed)."""
        try:
            if self.configured:
                self.path = Path(self.configured)
                self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            else:
                self._tmp = tempfile.TemporaryDirectory(prefix="ratls-gw-")
                self.path = Path(self._tmp.name)
            os.chmod(self.path, 0o700)
        except OSError as exc:  # not ours to chmod, a read-only filesystem, a missing parent
            where = Path(self.configured or tempfile.gettempdir())
            owner = f"it belongs to uid {where.stat().st_uid}, " if where.exists() else ""
            raise ConfigError(f"cannot use control.run_dir {where}: {exc.strerror} ({owner}the gateway runs as "
                              f"uid {os.getuid()})",
                              hint="give the run directory to the gateway's user (a tmpfs mounted with its uid), "
                                   "or point control.run_dir elsewhere") from None
        return self.path

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
