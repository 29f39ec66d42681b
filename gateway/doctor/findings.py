"""``ratls doctor``'s results: :class:`Finding`, its :class:`Status`, how they are printed and the
exit status they give."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

EXIT_OK, EXIT_FAILED = 0, 2
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
