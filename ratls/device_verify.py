"""The device half of the RA-TLS pipeline: every device record a certificate (or fresh-evidence
collection) carries is bound to the claims, verified by its device type, and appraised with the
other devices of its family. Fail closed: a record the claims do not list, a listed device
without a record, an unknown device type and a policy that requires devices none of which are
present are all failed checks."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from . import registry
from .appraisal import Appraisal, Check, failed
from .claims import Claims
from .devices import DeviceEvidence, binding_check, device_nonce, read_entries, unclaimed_checks
from .errors import EvidenceError
from .policy import Policy
from .trust import Trust


def _verify_one(entry: Any, device: DeviceEvidence, base: bytes, trust: Trust, now: datetime,
                appraisal: Appraisal) -> tuple[registry.DeviceType, Any] | None:
    kind = registry.lookup_device(entry.type)
    if kind is None:
        appraisal.add(failed(f"{entry.label}.type", f"device type '{entry.type}' is not known to this verifier"))
        return None
    if device.media_type != kind.media_type:
        appraisal.add(failed(f"{entry.label}.media-type", f"'{device.media_type}' is not what {kind.name} "
                                                          f"produces ({kind.media_type})"))
        return None
    try:
        verified = kind.verify(device, device_nonce(base, entry.label), entry.state, trust, now)
    except EvidenceError as exc:  # a verifier's own parse failure is a verdict on this device
        appraisal.add(failed(f"{entry.label}.verify", str(exc)))
        return None
    appraisal.add(verified.checks)
    appraisal.devices[entry.label] = kind.summary(verified)
    return kind, verified


def verify_devices(claims: Claims, devices: tuple[DeviceEvidence, ...], trust: Trust, now: datetime,
                   policy: Policy | None, appraisal: Appraisal) -> None:
    """Adds every device check to *appraisal* (nothing when there are no devices and no policy
    section asks for them)."""
    try:
        entries = read_entries(claims)
    except EvidenceError as exc:
        appraisal.add(failed("devices.claims", str(exc)))
        return
    appraisal.add(unclaimed_checks(entries, list(devices)))
    by_label = {d.label: d for d in devices}
    base = claims.encode_without_devices()
    by_family: dict[str, list[Any]] = defaultdict(list)
    for entry in entries:
        device = by_label.get(entry.label)
        appraisal.add(binding_check(entry, device))
        if device is None:
            continue
        got = _verify_one(entry, device, base, trust, now, appraisal)
        if got is not None:
            by_family[got[0].family].append(got[1])
    if policy is not None:
        appraisal.add(_appraise_families(by_family, policy))


def _appraise_families(by_family: dict[str, list[Any]], policy: Policy) -> list[Check]:
    """Each family's appraisal runs once, also with no devices (a policy may require them)."""
    checks: list[Check] = []
    seen: set[str] = set()
    for kind in registry.device_types():
        if kind.family in seen:
            continue
        seen.add(kind.family)
        checks.extend(kind.appraise(by_family.get(kind.family, []), policy))
    return checks
