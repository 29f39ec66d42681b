"""The gateway's identity: an in-memory key, its RA-TLS certificate, rotation, and fresh
evidence for the evidence API. The private key is never written to disk and never logged;
it leaves this process only inside the SDS secret, over the 0600 xDS unix socket."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ratls.cert import build_collection, generate_key
from ratls.claims import Claims
from ratls.devices import DeviceCollector
from ratls.errors import RatlsError
from ratls.issue import Issued, collect_for_claims, issue_certificate, make_claims
from ratls.registry import Platform
from ratls.timeutil import utcnow

from .config import IdentityConfig
from .facts import Facts
from .metrics import MetricFamily

log = logging.getLogger("ratls.gateway.identity")


@dataclass(frozen=True)
class Identity:
    key: ec.EllipticCurvePrivateKey
    issued: Issued
    serial: int  # 1, 2, ... per rotation in this process

    @property
    def cert(self) -> x509.Certificate:
        return self.issued.cert

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @property
    def not_after(self) -> datetime:
        return self.cert.not_valid_after_utc

    def __repr__(self) -> str:  # never let a key reach a log line through repr()
        return f"Identity(serial={self.serial}, not_after={self.not_after.isoformat()})"


class IdentityManager:
    def __init__(self, platform: Platform, *, lifetime: timedelta, rotate_at: float, curve: str, sans: list[str],
                 common_name: str, models: dict[str, Any] | None, config_digest: str | None,
                 devices: DeviceCollector | None = None) -> None:
        self.platform = platform
        self.devices = devices  # GPUs whose evidence goes into every certificate and fresh answer
        self.lifetime, self.rotate_at, self.curve = lifetime, rotate_at, curve
        self.sans, self.common_name = sans, common_name
        self.models, self.config_digest = models, config_digest
        self.instance = secrets.token_bytes(16)
        self.current: Identity | None = None
        self.rotations = 0
        self.evidence_failures = 0
        self.last_error: str | None = None
        self._serial = 0

    @classmethod
    def configured(cls, platform: Platform, section: IdentityConfig, *, models: dict[str, Any] | None,
                   config_digest: str | None, devices: DeviceCollector | None = None) -> IdentityManager:
        return cls(platform, lifetime=section.lifetime_td, rotate_at=section.rotate_at, curve=section.key_curve,
                   sans=section.sans, common_name=section.common_name, models=models, config_digest=config_digest,
                   devices=devices)

    def issue(self, now: datetime | None = None) -> Identity:
        """A new key and certificate bound to fresh evidence. On failure the current identity
        stays in place (it is still valid) and the error is counted and raised."""
        now = now or utcnow()
        key = generate_key(self.curve)
        try:
            issued = issue_certificate(self.platform, key, now=now, lifetime=self.lifetime, sans=self.sans,
                                       common_name=self.common_name, instance=self.instance, models=self.models,
                                       config=self.config_digest, devices=self.devices)
        except RatlsError as exc:
            self.evidence_failures += 1
            self.last_error = str(exc)
            log.error("evidence collection failed; keeping the current certificate: %s", exc)
            raise
        self._serial += 1
        identity = Identity(key, issued, self._serial)
        if self.current is not None:
            self.rotations += 1
        self.current = identity
        self.last_error = None
        log.info("issued certificate %d for platform %s valid until %s%s", identity.serial, self.platform.name,
                 identity.not_after.isoformat(), " (SIMULATED)" if self.platform.simulated else "")
        return identity

    async def issue_async(self) -> Identity:
        return await asyncio.to_thread(self.issue)

    def rotation_due(self, now: datetime) -> datetime:
        """Issuance time + rotate_at x lifetime. Measured from the claims' iat, not from the
        certificate's notBefore, which is backdated for clock skew."""
        assert self.current is not None
        claims = self.current.issued.claims
        start = datetime.fromtimestamp(claims.iat, UTC)
        due = start + timedelta(seconds=(claims.exp - claims.iat) * self.rotate_at)
        # Evidence can go stale before the certificate does (embedded TDX collateral past its
        # nextUpdate makes clients reject it): the platform says when, and we rotate by then.
        serve_until = self.current.issued.evidence.serve_until
        return min(due, serve_until) if serve_until is not None else due

    def fresh_evidence(self, nonce: bytes, now: datetime | None = None) -> bytes:
        """A CMW collection (same form as the certificate extension) whose claims hold the
        nonce and the current key's hash, bound to new hardware evidence."""
        if self.current is None:
            raise RatlsError("no identity yet")
        now = now or utcnow()
        claims: Claims = make_claims(self.current.key, platform=self.platform.name, now=now,
                                     lifetime=timedelta(minutes=5), instance=self.instance, models=self.models,
                                     config=self.config_digest, nonce=nonce)
        try:
            claims_cbor, evidence, devices = collect_for_claims(self.platform, claims, self.devices)
        except RatlsError as exc:
            self.evidence_failures += 1
            self.last_error = str(exc)
            raise
        return build_collection(claims_cbor, evidence, devices).encode()


async def rotate_certificate(identity: IdentityManager, publish: Callable[[], Awaitable[str]]) -> int:
    """A new certificate, pushed to Envoy; its serial."""
    issued = await identity.issue_async()
    version = await publish()
    log.info("rotated to certificate %d (xds version %s)", issued.serial, version)
    return issued.serial


async def rotate_when_due(identity: IdentityManager, rotate: Callable[[], Awaitable[int]], retry_s: float) -> None:
    """Rotate at each certificate's due time, for ever; after a failure retry every *retry_s*."""
    while True:
        due = identity.rotation_due(utcnow())
        await asyncio.sleep(max(0.0, (due - utcnow()).total_seconds()))
        try:
            await rotate()
        except RatlsError:
            # Keep serving the still-valid certificate; the alarm is the metric and the log.
            await asyncio.sleep(retry_s)


class IdentityFacts(Facts):
    """The served certificate's readiness, metrics and status (none is served before the
    first issue); *platform* is asked only for metrics and status."""

    def __init__(self, manager: IdentityManager | None, platform: Callable[[], Platform]) -> None:
        self.manager = manager
        self.platform = platform

    @property
    def _current(self) -> Identity | None:
        return self.manager.current if self.manager else None

    def readiness_reasons(self) -> list[str]:
        ident = self._current
        if ident is None:
            return ["no certificate"]
        return ["certificate expired"] if ident.not_after <= utcnow() else []

    def metric_families(self) -> list[MetricFamily]:
        ident, manager = self._current, self.manager
        return [
            MetricFamily("ratls_certificate_expiry_timestamp_seconds", "gauge",
                         "notAfter of the served certificate").add(ident.not_after.timestamp() if ident else 0),
            MetricFamily("ratls_certificate_serial", "gauge", "rotation counter of the served certificate").add(
                ident.serial if ident else 0),
            MetricFamily("ratls_certificate_rotations_total", "counter", "certificate rotations").add(
                manager.rotations if manager else 0),
            MetricFamily("ratls_evidence_failures_total", "counter", "failed evidence collections").add(
                manager.evidence_failures if manager else 0),
            MetricFamily("ratls_simulated", "gauge", "1 when the platform is SIMULATED").add(
                1 if self.platform().simulated else 0),
        ]

    def status(self) -> dict[str, Any]:
        ident, platform = self._current, self.platform()
        return {"platform": platform.name, "simulated": platform.simulated,
                "certificate": {"serial": ident.serial, "not_after": ident.not_after.isoformat()} if ident else None}
