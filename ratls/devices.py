"""Device evidence (GPUs) that accompanies the CPU TEE's evidence in one RA-TLS certificate.

Binding (DESIGN.md §3): each device's evidence is a CMW record (``gpu0``, ...) beside ``cpu``,
with its own endorsements (chain, reference values) in a nested collection under
``endorsements``. The claims carry, per label, the device type, the SHA-256 of the record and the
state the attested gateway read from the device's driver; the CPU report covers the claims, so a
record cannot be swapped or added without the CPU signature failing. Each device's challenge
nonce is derived from the claims *without* the device entries (the only part known before the
devices answer), so a device report made for another certificate, key or fresh-evidence nonce
carries the wrong nonce.

What this does not give: the CPU hardware does not see the GPU. Until TDISP / TEE-IO links them,
the GPU is identified by its own certificate and the pairing rests on the attested gateway code
that asked it. README ("What GPU attestation proves") says so.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .appraisal import Check, failed, passed
from .claims import HASH_ALG_SHA256, Claims
from .errors import EvidenceError

NONCE_PREFIX = b"ratls/1 device nonce\x00"
MAX_DEVICES = 16
# device labels: a short lower-case kind and an index ("gpu0"); they name checks ("gpu0.nonce"),
# so nothing else (no dots, no "policy", no NUL in the nonce input) may be one
LABEL = re.compile(r"[a-z]{2,8}[0-9]{1,2}")


def check_label(label: str) -> None:
    if not LABEL.fullmatch(label):
        raise EvidenceError(f"'{label[:40]}' is not a device label (a kind and an index, like gpu0)")


@dataclass(frozen=True)
class DeviceEvidence:
    """One device's raw evidence as carried in a certificate or fresh-evidence collection."""

    label: str  # "gpu0"
    media_type: str
    raw: bytes
    endorsements: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class CollectedDevice:
    """What a collector produced for one device: its evidence, its type and the state the
    gateway read from the driver (CC mode, dev-tools mode), which goes into the claims."""

    evidence: DeviceEvidence
    type: str  # registered device type name ("nvidia-gpu", "sim-nvidia-gpu")
    state: Mapping[str, Any] = field(default_factory=dict)


class DeviceCollector(Protocol):
    """Collects every configured device's evidence for the nonces it is given (by label), and
    serves the reference documents (RIMs) its evidence names, by ID, to verifying clients."""

    def collect(self, nonce_for: Callable[[str], bytes]) -> list[CollectedDevice]: ...

    def reference(self, ref_id: str) -> bytes | None: ...


def device_nonce(claims_without_devices: bytes, label: str) -> bytes:
    """The 32-byte challenge for device *label*: SHA-256(prefix || label || 0 || claims-cbor)."""
    return hashlib.sha256(NONCE_PREFIX + label.encode() + b"\x00" + claims_without_devices).digest()


def evidence_hash(raw: bytes) -> list[Any]:
    return [HASH_ALG_SHA256, hashlib.sha256(raw).digest()]


def claims_entries(devices: list[CollectedDevice]) -> dict[str, Any] | None:
    if not devices:
        return None
    return {d.evidence.label: {"type": d.type, "evidence-hash": evidence_hash(d.evidence.raw),
                               "state": dict(d.state)} for d in devices}


@dataclass(frozen=True)
class DeviceEntry:
    """A claims entry for one device, read strictly."""

    label: str
    type: str
    digest: bytes
    state: Mapping[str, Any]


def read_entries(claims: Claims) -> list[DeviceEntry]:
    entries: list[DeviceEntry] = []
    raw = claims.devices or {}
    if len(raw) > MAX_DEVICES:
        raise EvidenceError(f"claims list {len(raw)} devices, more than the {MAX_DEVICES} this verifier reads")
    for label, entry in sorted(raw.items()):
        check_label(label)
        kind, digest, state = entry.get("type"), entry.get("evidence-hash"), entry.get("state", {})
        if not isinstance(kind, str):
            raise EvidenceError(f"claims: devices.{label}.type must be a device type name")
        if (not isinstance(digest, list) or len(digest) != 2 or digest[0] != HASH_ALG_SHA256
                or not isinstance(digest[1], bytes) or len(digest[1]) != 32):
            raise EvidenceError(f"claims: devices.{label}.evidence-hash must be [1, <32-byte SHA-256>]")
        if not isinstance(state, dict) or set(entry) - {"type", "evidence-hash", "state"}:
            raise EvidenceError(f"claims: devices.{label} has unknown keys or a state that is not a map")
        entries.append(DeviceEntry(label, kind, digest[1], state))
    return entries


def binding_check(entry: DeviceEntry, device: DeviceEvidence | None) -> Check:
    name = f"{entry.label}.binding"
    if device is None:
        return failed(name, f"the claims list {entry.label} but the certificate carries no evidence for it")
    if hmac.compare_digest(hashlib.sha256(device.raw).digest(), entry.digest):
        return passed(name, f"{entry.label} evidence is the one the claims (and so the CPU report) cover")
    return failed(name, f"{entry.label} evidence differs from the SHA-256 the claims carry: it was swapped in "
                        "from elsewhere or altered")


def unclaimed_checks(entries: list[DeviceEntry], devices: list[DeviceEvidence]) -> list[Check]:
    claimed = {e.label for e in entries}
    return [failed(f"{d.label}.binding", f"{d.label} evidence is not covered by the claims (an added record)")
            for d in devices if d.label not in claimed]
