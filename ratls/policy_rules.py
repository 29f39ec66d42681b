"""The vocabulary platforms use to explain their policy sections (``ratls policy explain``) and
to say where a failed check's value lives (``ratls policy diff``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .appraisal import Appraisal
from .policy import Policy


@dataclass(frozen=True)
class Rule:
    """One statement about the policy. ``pinned`` is False when the policy leaves the value open
    (anything the server presents is accepted); ``warning`` marks what weakens it on purpose."""

    topic: str
    text: str
    pinned: bool
    value: Any = None
    warning: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "pinned": self.pinned, "warning": self.warning, "text": self.text,
                "value": self.value}



@dataclass(frozen=True)
class CheckSpec:
    """Where a policy check's two sides live: ``key`` is the path in the policy YAML, ``expected``
    reads the policy's side, ``actual`` the evidence's (from the Appraisal)."""

    claim: str
    key: tuple[str | int, ...]
    expected: Callable[[Policy], Any]
    actual: Callable[[Appraisal], Any]
    suggest: bool = False  # an identity pin: accepting the new value is a matter of trusting it


def hexes(values: list[bytes] | None) -> list[str] | None:
    return None if values is None else [v.hex() for v in values]


def duration_text(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    # days only from two on: "24h" reads as the policy wrote it
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0 and (unit != "d" or seconds >= 2 * size):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def one_of(values: list[str]) -> str:
    return values[0] if len(values) == 1 else "one of " + ", ".join(values)


def allow_list(topic: str, label: str, values: list[bytes] | None, open_text: str) -> Rule:
    if values is None:
        return Rule(topic, open_text, pinned=False)
    return Rule(topic, f"{label} must be {one_of([v.hex() for v in values])}", pinned=True, value=hexes(values))


def evidence_field(key: str) -> Callable[[Appraisal], Any]:
    return lambda a: a.evidence.get(key)


def measurement(key: str) -> Callable[[Appraisal], Any]:
    return lambda a: a.measurements.get(key)


def hex_or_none(value: bytes | None) -> str | None:
    return None if value is None else value.hex()
