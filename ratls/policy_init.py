"""Write a starting policy from observed, authenticated evidence (trust on first use)."""

from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from . import registry
from .appraisal import Appraisal
from .cert import RatlsCertificate
from .errors import PolicyViolation

HEADER = """\
# ratls policy written by 'ratls policy init' from evidence observed at {when}.
# TRUST ON FIRST USE: these values describe what the server presented, not what it
# *should* run. Review every value (compute the expected launch digest or MRTD/RTMRs
# independently, e.g. with sev-snp-measure or from the TD firmware build) before relying on
# this policy, then remove
# 'trust_on_first_use: true'.
"""


def check_simulated_root(server_root: str, local_root: str | None, state_dir: Path) -> str:
    """Whether the server's simulated root may be pinned, as a note for the user and the policy.

    A simulated root is only a key someone generated, so it can be trusted only by comparing it
    with the one the developer's own simulator holds; TOFU remains only when there is none."""
    if local_root is None:
        return (f"WARNING: simulated root {server_root} taken on first use: there is no local simulated root in "
                f"{state_dir} to compare it with. Check it against 'ratls sim root' on the machine that runs the "
                "gateway before trusting this policy.")
    if local_root != server_root:
        raise PolicyViolation(f"the server's simulated root {server_root} is not the local simulated root "
                              f"{local_root} (in {state_dir}): another simulator, or an impostor, made this evidence",
                              hint="point --sim-dir or RATLS_SIM_DIR at the state directory the gateway uses")
    return f"simulated root {server_root} matches the local simulated root in {state_dir}"


def _observe_devices(doc: dict[str, Any], appraisal: Appraisal) -> None:
    """GPUs: their section from what was presented; simulated GPUs also need their roots pinned
    (taken on first use like every other value here, and only from evidence that verified)."""
    for kind in registry.device_types():
        present = [d for d in appraisal.devices.values() if d.get("type") == kind.name]
        if not present:
            continue
        for section in kind.policy_sections:
            if section.observe is not None and section.key not in doc:
                doc[section.key] = section.observe(appraisal)
        if kind.simulated:
            doc["allow_simulated"] = True
            roots = doc.setdefault("simulated", {}).get("root_sha256")
            pinned = [roots] if isinstance(roots, str) else list(roots or [])
            for device in present:
                pinned += [r for r in (device.get("root_sha256"), device.get("rim_root_sha256")) if r]
            doc["simulated"]["root_sha256"] = list(dict.fromkeys(pinned))


def policy_from_observation(appraisal: Appraisal, rc: RatlsCertificate, now: datetime,
                            sim_root: str | None = None, sim_root_note: str | None = None) -> str:
    doc: dict[str, Any] = {"version": 1, "trust_on_first_use": True}
    if appraisal.simulated:
        doc["platforms"] = []
        doc["allow_simulated"] = True
        doc["simulated"] = {"root_sha256": sim_root}
    else:
        doc["platforms"] = [rc.claims.platform]
    for section in registry.lookup(rc.claims.platform).policy_sections:
        if section.observe is not None:
            doc[section.key] = section.observe(appraisal)
    _observe_devices(doc, appraisal)
    claims: dict[str, Any] = {"max_age": "24h"}
    models = rc.claims.models or {}
    if models.get("models"):
        claims["models"] = dict(models["models"])
    if rc.claims.config:
        claims["config"] = rc.claims.config
    doc["claims"] = claims
    header = HEADER.format(when=now.isoformat())
    if sim_root_note:
        header += "".join(f"# {line}\n" for line in textwrap.wrap(sim_root_note, 96))
    return header + yaml.safe_dump(doc, sort_keys=False)


