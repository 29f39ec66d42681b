"""The result of verifying evidence: a verdict plus every check that led to it.

The JSON form (``Appraisal.to_json``) is a stable, documented contract (README, "Appraisal
JSON"). Fields are only ever added, never renamed, within schema ``ratls-appraisal/1``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SCHEMA = "ratls-appraisal/1"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def passed(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def failed(name: str, detail: str) -> Check:
    return Check(name, False, detail)


def allow_listed(name: str, value: bytes, allowed: list[bytes] | None, label: str) -> list[Check]:
    """One check that *value* is in the policy's allow-list; none when the policy sets no list."""
    if allowed is None:
        return []
    if value in allowed:
        return [passed(name, f"{label} {value.hex()} is allowed")]
    return [failed(name, f"{label} {value.hex()} is not in the policy's {len(allowed)} allowed value(s)")]


@dataclass
class Appraisal:
    platform: str | None
    simulated: bool = False
    policy_applied: bool = False
    measurements: dict[str, str] = field(default_factory=dict)
    tcb: dict[str, Any] = field(default_factory=dict)
    claims: dict[str, Any] | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> what was verified (GPUs)

    @property
    def ok(self) -> bool:
        # Fail closed: an appraisal with no checks at all proves nothing.
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def verdict(self) -> str:
        return "pass" if self.ok else "fail"

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def add(self, checks: list[Check] | Check) -> None:
        if isinstance(checks, Check):
            self.checks.append(checks)
        else:
            self.checks.extend(checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "verdict": self.verdict,
            "platform": self.platform,
            "simulated": self.simulated,
            "policy_applied": self.policy_applied,
            "measurements": self.measurements,
            "tcb": self.tcb,
            "claims": self.claims,
            "evidence": self.evidence,
            "devices": self.devices,
            "checks": [c.to_json() for c in self.checks],
            "failures": [c.name for c in self.failures],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False)

    def summary(self) -> str:
        lines = []
        banner = "SIMULATED platform - not hardware evidence" if self.simulated else None
        head = f"verdict: {self.verdict.upper()}  platform: {self.platform or 'unknown'}"
        if banner:
            head += f"  [{banner}]"
        if any(d.get("simulated") for d in self.devices.values()):
            head += "  [SIMULATED GPU - not hardware evidence]"
        lines.append(head)
        if not self.policy_applied:
            lines.append("policy: none given - authenticity only (signature, chain, certificate extensions)")
        for name, value in self.measurements.items():
            lines.append(f"{name}: {value}")
        if self.tcb:
            lines.append("tcb: " + ", ".join(f"{k}={v}" for k, v in self.tcb.items()))
        for label, device in self.devices.items():
            lines.append(f"{label}: " + ", ".join(f"{k}={v}" for k, v in device.items() if v is not None))
        for check in self.checks:
            mark = "ok  " if check.ok else "FAIL"
            lines.append(f"  [{mark}] {check.name}: {check.detail}")
        return "\n".join(lines)
