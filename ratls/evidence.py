"""Platform-neutral evidence and what a platform verifier hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from .appraisal import Check
from .errors import RatlsError

P = TypeVar("P")


@dataclass(frozen=True)
class Evidence:
    """Raw hardware evidence plus the endorsements a verifier may need offline."""

    platform: str
    media_type: str
    raw: bytes
    endorsements: dict[str, bytes] = field(default_factory=dict)
    # When a server should stop presenting this evidence (e.g. embedded TDX collateral about to
    # expire); set by the platform at collection, not carried in certificates.
    serve_until: datetime | None = None


@dataclass
class VerifiedEvidence(Generic[P]):
    """What the verify step established. ``authentic`` is False if any check failed.

    ``report_data`` is the 64-byte user data the hardware signed; the generic pipeline
    compares it with the claims binding. ``parsed`` is the platform's typed result, the only
    thing its appraisal reads; ``measurements``, ``tcb`` and ``summary`` are for display.
    """

    platform: str
    report_data: bytes
    checks: list[Check]
    parsed: P
    simulated: bool = False
    measurements: dict[str, str] = field(default_factory=dict)
    tcb: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def authentic(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


@dataclass(frozen=True)
class FetchFailed:
    """An endorsement the verifier went to fetch and did not get (a VCEK from AMD KDS, TDX
    collateral from a PCCS): the reason and what to do. Handed to the verify step in place of
    the endorsement, so its failed check says why, not only that none was given."""

    message: str
    hint: str | None = None

    @classmethod
    def from_error(cls, exc: RatlsError) -> FetchFailed:
        return cls(exc.message, exc.hint)

    def explain(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
