"""The ratls/1 claims map and its binding into hardware ``report_data``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from . import cbor
from .errors import EvidenceError

PROFILE = "ratls/1"
BINDING_PREFIX = b"ratls/1 claims\x00"
HASH_ALG_SHA256 = 1  # CoSWID / IANA named-information hash algorithm id

_KNOWN_KEYS = {"pubkey-hash", "iat", "exp", "platform", "nonce", "models", "config", "instance", "profile",
               "devices"}
DEVICES_KEY = "devices"


def spki_sha256(spki_der: bytes) -> bytes:
    return hashlib.sha256(spki_der).digest()


@dataclass(frozen=True)
class Claims:
    pubkey_sha256: bytes
    iat: int
    exp: int
    platform: str
    instance: bytes
    models: dict[str, Any] | None = None
    config: str | None = None
    nonce: bytes | None = None
    profile: str = PROFILE
    extra: dict[str, Any] = field(default_factory=dict)
    # label ("gpu0") -> {"type", "evidence-hash", "state"}: the device evidence this certificate
    # carries beside the CPU's, covered by the CPU report through these claims (ratls.devices)
    devices: dict[str, Any] | None = None

    def to_map(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(
            {
                "pubkey-hash": [HASH_ALG_SHA256, self.pubkey_sha256],
                "iat": self.iat,
                "exp": self.exp,
                "platform": self.platform,
                "instance": self.instance,
                "profile": self.profile,
            }
        )
        if self.models is not None:
            out["models"] = self.models
        if self.config is not None:
            out["config"] = self.config
        if self.nonce is not None:
            out["nonce"] = self.nonce
        if self.devices is not None:
            out[DEVICES_KEY] = self.devices
        return out

    def encode_without_devices(self) -> bytes:
        """The claims before device evidence was added: what each device's nonce is derived from."""
        out = self.to_map()
        out.pop(DEVICES_KEY, None)
        return cbor.encode(out)

    def encode(self) -> bytes:
        return cbor.encode(self.to_map())

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly view (bytes as hex) for appraisals and the evidence API."""
        return _jsonable(self.to_map())


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def report_data_for(claims_cbor: bytes) -> bytes:
    """report_data (64 bytes) = SHA-512("ratls/1 claims\\0" || claims_cbor)."""
    return hashlib.sha512(BINDING_PREFIX + claims_cbor).digest()


def _require(m: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in m:
        raise EvidenceError(f"claims: required key '{key}' is missing")
    value = m[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise EvidenceError(f"claims: '{key}' has the wrong type ({type(value).__name__})")
    return value


def decode_claims(claims_cbor: bytes) -> Claims:
    """Strictly decode a claims map; unknown keys are kept in ``extra`` (forward compatible)."""
    m = cbor.decode(claims_cbor, what="claims")
    if not isinstance(m, dict):
        raise EvidenceError("claims: top level must be a CBOR map")
    for key in m:
        if not isinstance(key, str):
            raise EvidenceError("claims: keys must be text strings")
    profile = _require(m, "profile", str)
    if profile != PROFILE:
        raise EvidenceError(f"claims: profile '{profile}' is not supported (expected '{PROFILE}')")
    ph = _require(m, "pubkey-hash", list)
    if len(ph) != 2 or ph[0] != HASH_ALG_SHA256 or not isinstance(ph[1], bytes) or len(ph[1]) != 32:
        raise EvidenceError("claims: 'pubkey-hash' must be [1, <32-byte SHA-256>]")
    iat = _require(m, "iat", int)
    exp = _require(m, "exp", int)
    if exp <= iat:
        raise EvidenceError("claims: 'exp' is not after 'iat'")
    platform = _require(m, "platform", str)
    instance = _require(m, "instance", bytes)
    models = m.get("models")
    if models is not None and not isinstance(models, dict):
        raise EvidenceError("claims: 'models' must be a map")
    config = m.get("config")
    if config is not None and not isinstance(config, str):
        raise EvidenceError("claims: 'config' must be a text digest like sha256:<hex>")
    nonce = m.get("nonce")
    if nonce is not None and (not isinstance(nonce, bytes) or not 8 <= len(nonce) <= 64):
        raise EvidenceError("claims: 'nonce' must be 8 to 64 bytes")
    devices = m.get(DEVICES_KEY)
    if devices is not None and (not isinstance(devices, dict) or not devices
                                or not all(isinstance(k, str) and isinstance(v, dict) for k, v in devices.items())):
        raise EvidenceError("claims: 'devices' must be a non-empty map of device label to a map")
    extra = {k: v for k, v in m.items() if k not in _KNOWN_KEYS}
    return Claims(
        pubkey_sha256=ph[1],
        iat=iat,
        exp=exp,
        platform=platform,
        instance=instance,
        models=models,
        config=config,
        nonce=nonce,
        profile=profile,
        extra=extra,
        devices=devices,
    )
