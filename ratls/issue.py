"""Issue an RA-TLS certificate: claims -> report_data -> hardware evidence -> certificate."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from .cert import BACKDATE, build_certificate, spki_der
from .claims import Claims, decode_claims, report_data_for, spki_sha256
from .devices import CollectedDevice, DeviceCollector, DeviceEvidence, claims_entries, device_nonce
from .evidence import Evidence
from .registry import Platform


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    claims: Claims
    claims_cbor: bytes
    evidence: Evidence
    devices: tuple[DeviceEvidence, ...] = field(default=())


def make_claims(key: ec.EllipticCurvePrivateKey, *, platform: str, now: datetime, lifetime: timedelta,
                instance: bytes, models: dict[str, Any] | None = None, config: str | None = None,
                nonce: bytes | None = None) -> Claims:
    return Claims(
        pubkey_sha256=spki_sha256(spki_der(key.public_key())),
        iat=int(now.timestamp()),
        exp=int((now + lifetime).timestamp()),
        platform=platform,
        instance=instance,
        models=models,
        config=config,
        nonce=nonce,
    )


def collect_devices(collector: DeviceCollector | None, claims: Claims) -> tuple[Claims, list[CollectedDevice]]:
    """Ask every device for evidence on a nonce derived from *claims*, then add their entries."""
    if collector is None:
        return claims, []
    base = claims.encode_without_devices()
    devices = collector.collect(lambda label: device_nonce(base, label))
    return replace(claims, devices=claims_entries(devices)), devices


def collect_for_claims(platform: Platform, claims: Claims,
                       devices: DeviceCollector | None = None) -> tuple[bytes, Evidence, tuple[DeviceEvidence, ...]]:
    """Devices first (their nonces come from the claims without them), then the CPU over all."""
    claims, collected = collect_devices(devices, claims)
    claims_cbor = claims.encode()
    return claims_cbor, platform.collect(report_data_for(claims_cbor)), tuple(d.evidence for d in collected)


def issue_certificate(platform: Platform, key: ec.EllipticCurvePrivateKey, *, now: datetime,
                      lifetime: timedelta = timedelta(hours=24), sans: list[str] | None = None,
                      common_name: str = "ratls-gateway", instance: bytes | None = None,
                      models: dict[str, Any] | None = None, config: str | None = None,
                      devices: DeviceCollector | None = None) -> Issued:
    claims = make_claims(key, platform=platform.name, now=now, lifetime=lifetime,
                         instance=instance or secrets.token_bytes(16), models=models, config=config)
    claims_cbor, evidence, device_evidence = collect_for_claims(platform, claims, devices)
    cert = build_certificate(key, claims_cbor, evidence, not_before=now - BACKDATE, not_after=now + lifetime,
                             common_name=common_name, sans=sans or ["localhost", "127.0.0.1"],
                             devices=device_evidence)
    return Issued(cert, decode_claims(claims_cbor), claims_cbor, evidence, device_evidence)
