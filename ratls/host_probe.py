"""What platform detection may ask about the machine it runs on, behind one injectable object:
configfs-tsm's provider, whether a device node exists, and the TPM tools. Each answer is
probed once; tests point the paths at a fake tree and the runner at recorded answers."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .tsm import DEFAULT_ROOT, TsmFilesystem

# runs a command in a working directory (the TPM tools); None: the platform's own runner
Runner = Callable[[list[str], Path], None]


class HostProbe:
    def __init__(self, tsm_root: Path = DEFAULT_ROOT, *, fs: TsmFilesystem | None = None,
                 locate: Callable[[Path], Path] | None = None, run: Runner | None = None) -> None:
        self.tsm_root = tsm_root
        self.fs = fs or TsmFilesystem()
        self._locate = locate  # a device's real path -> where this probe looks for it (a fake tree)
        self.run = run
        self._memo: dict[str, Any] = {}

    def device(self, path: Path) -> Path:
        return self._locate(path) if self._locate is not None else path

    def has_device(self, path: Path) -> bool:
        return self.device(path).exists()

    def remember(self, key: str, compute: Callable[[], Any]) -> Any:
        """One probe per question, however many platforms ask it (e.g. the Azure HCL report)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def tsm_provider(self) -> str | None:
        return self.remember("tsm-provider", self._probe_tsm)

    def _probe_tsm(self) -> str | None:
        if not self.tsm_root.is_dir():
            return None
        entry = self.tsm_root / f"ratls-probe-{secrets.token_hex(4)}"
        try:
            self.fs.mkdir(entry)
        except OSError:
            return None
        try:
            return self.fs.read(entry / "provider").decode(errors="replace").strip()
        except OSError:
            return None
        finally:
            try:
                self.fs.rmdir(entry)
            except OSError:
                pass
