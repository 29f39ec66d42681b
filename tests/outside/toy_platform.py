"""A TEE defined outside ``ratls/``: it owns its name, media type, policy section, settings,
detection and display, and plugs in through the registry alone."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ratls.appraisal import Check, failed, passed
from ratls.evidence import Evidence, VerifiedEvidence
from ratls.host_probe import HostProbe
from ratls.policy import Policy, PolicySection
from ratls.registry import PlatformBase, PlatformSettings
from ratls.trust import Trust
from ratls.yamlfile import KeyedReader

TOY_KEY = b"toy-vendor-root"  # the toy vendor's "hardware" MAC key


@dataclass(frozen=True)
class ToyPolicy:
    measurements: list[bytes] | None = None


def parse_toy(m: KeyedReader) -> ToyPolicy:
    policy = ToyPolicy(measurements=m.hex_list("measurements", 8))
    m.finish()
    return policy


TOY_POLICY: PolicySection[ToyPolicy] = PolicySection("toy-tee", "toy", parse_toy, ToyPolicy())


@dataclass(frozen=True)
class ToyReport:
    measurement: bytes
    report_data: bytes


class ToyPlatform(PlatformBase):
    name = "toy-tee"
    media_type = "application/vnd.example.toy-report"
    policy_sections = (TOY_POLICY,)

    def __init__(self, measurement: bytes = b"\x07" * 8) -> None:
        self.measurement = measurement

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> ToyPlatform:
        return cls()

    @classmethod
    def detect(cls, host: HostProbe) -> bool:
        return host.tsm_provider() == "toy_guest"

    @classmethod
    def describe(cls, evidence: Evidence) -> dict[str, Any]:
        return {"measurements": {"toy_measurement": evidence.raw[:8].hex()}}

    def collect(self, report_data: bytes) -> Evidence:
        body = self.measurement + report_data
        return Evidence(self.name, self.media_type, body + hmac.new(TOY_KEY, body, hashlib.sha256).digest())

    def verify(self, evidence: Evidence, trust: Trust, now: datetime) -> VerifiedEvidence[ToyReport]:
        body, mac = evidence.raw[:-32], evidence.raw[-32:]
        ok = hmac.compare_digest(mac, hmac.new(TOY_KEY, body, hashlib.sha256).digest())
        report = ToyReport(body[:8], body[8:])
        return VerifiedEvidence(self.name, report.report_data,
                                [(passed if ok else failed)("toy.signature", "toy report MAC")], report,
                                measurements={"toy_measurement": report.measurement.hex()})

    def appraise(self, verified: VerifiedEvidence[ToyReport], policy: Policy) -> list[Check]:
        allowed = TOY_POLICY.of(policy).measurements
        if allowed is None:
            return [failed("policy.toy.measurement", "no toy measurement listed")]
        ok = verified.parsed.measurement in allowed
        have = verified.parsed.measurement.hex()
        return [(passed if ok else failed)("policy.toy.measurement", f"toy measurement {have}")]
