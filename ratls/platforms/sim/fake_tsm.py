"""A fake configfs-tsm tree: a real temporary directory shaped like
``/sys/kernel/config/tsm/report`` plus the kernel's reaction to writes.

Writing ``inblob`` bumps ``generation`` and produces ``outblob`` (and ``auxblob``) from the
``respond`` callback, as the guest driver would. Knobs let tests inject the failures a
real kernel shows: another writer racing, a wrong provider, an empty or failing outblob.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ...tsm import TsmFilesystem

Responder = Callable[[bytes, int | None], tuple[bytes, bytes | None]]


class FakeTsm(TsmFilesystem):
    def __init__(self, root: Path, respond: Responder, *, provider: str = "sev_guest") -> None:
        self.root = root
        self.respond = respond
        self.provider = provider
        self.race_on_read = False
        self.fail_outblob: OSError | None = None
        self.entries_created: list[Path] = []
        root.mkdir(parents=True, exist_ok=True)

    def mkdir(self, path: Path) -> None:
        super().mkdir(path)
        self.entries_created.append(path)
        (path / "provider").write_text(self.provider + "\n")
        (path / "generation").write_text("0\n")

    def rmdir(self, path: Path) -> None:
        # configfs removes attribute files with the directory; a plain directory needs help.
        for child in path.iterdir():
            child.unlink()
        super().rmdir(path)

    def _bump(self, entry: Path) -> None:
        gen = int((entry / "generation").read_text())
        (entry / "generation").write_text(f"{gen + 1}\n")

    def write(self, path: Path, data: bytes) -> None:
        super().write(path, data)
        entry = path.parent
        self._bump(entry)
        if path.name == "inblob":
            privlevel_file = entry / "privlevel"
            privlevel = int(privlevel_file.read_text()) if privlevel_file.exists() else None
            outblob, auxblob = self.respond(data, privlevel)
            (entry / "outblob").write_bytes(outblob)
            if auxblob is not None:
                (entry / "auxblob").write_bytes(auxblob)

    def read(self, path: Path) -> bytes:
        if path.name == "outblob":
            if self.fail_outblob is not None:
                raise self.fail_outblob
            if self.race_on_read:
                self._bump(path.parent)
        return super().read(path)


def sim_snp_responder(chain: object) -> Responder:
    """Kernel side for SEV-SNP, played by the simulated chain (a ``SimChain``)."""
    from ..snp.abi import Endorsement, encode_cert_table

    def respond(report_data: bytes, privlevel: int | None) -> tuple[bytes, bytes | None]:
        fields = chain.report_fields(report_data, vmpl=privlevel or 0)  # type: ignore[attr-defined]
        report = chain.sign_report(fields)  # type: ignore[attr-defined]
        ends = chain.endorsements()  # type: ignore[attr-defined]
        labels = (Endorsement.VCEK, Endorsement.ASK, Endorsement.ARK)
        return report, encode_cert_table({label: ends[label] for label in labels})

    return respond
