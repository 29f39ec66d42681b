"""Write a starting policy from observed, authenticated evidence (trust on first use)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import yaml

from .appraisal import Appraisal
from .cert import RatlsCertificate

HEADER = """\
# ratls policy written by 'ratls policy init' from evidence observed at {when}.
# TRUST ON FIRST USE: these values describe what the server presented, not what it
# *should* run. Review every value (compute the expected launch digest or MRTD/RTMRs
# independently, e.g. with sev-snp-measure or from the TD firmware build) before relying on
# this policy, then remove
# 'trust_on_first_use: true'.
"""


def policy_from_observation(appraisal: Appraisal, rc: RatlsCertificate, now: datetime,
                            sim_root: str | None = None) -> str:
    ev: dict[str, Any] = appraisal.evidence
    doc: dict[str, Any] = {"version": 1, "trust_on_first_use": True}
    if appraisal.simulated:
        doc["platforms"] = []
        doc["allow_simulated"] = True
        doc["simulated"] = {"root_sha256": sim_root}
    else:
        doc["platforms"] = [rc.claims.platform]
    if "mrtd" in appraisal.measurements:
        doc["tdx"] = _tdx_section(appraisal)
    else:
        doc["sev-snp"] = _snp_section(ev, appraisal)
    claims: dict[str, Any] = {"max_age": "24h"}
    models = rc.claims.models or {}
    if models.get("models"):
        claims["models"] = dict(models["models"])
    if rc.claims.config:
        claims["config"] = rc.claims.config
    doc["claims"] = claims
    return HEADER.format(when=now.isoformat()) + yaml.safe_dump(doc, sort_keys=False)


def _snp_section(ev: dict[str, Any], appraisal: Appraisal) -> dict[str, Any]:
    return {
        "measurements": [appraisal.measurements["measurement"]],
        "min_tcb": dict(ev.get("reported_tcb", {})),
        "guest_policy": {"debug": bool(ev["policy"]["debug"]), "migrate_ma": bool(ev["policy"]["migrate_ma"])},
        "vmpl": ev.get("vmpl", 0),
        "signing_keys": [ev.get("signing_key", "vcek")],
    }


def _tdx_section(appraisal: Appraisal) -> dict[str, Any]:
    m = appraisal.measurements
    # RTMR3 is extended at runtime by the guest (e.g. per container); it is left out on purpose.
    return {
        "mrtd": [m["mrtd"]],
        "rtmr": {i: m[f"rtmr{i}"] for i in range(3)},
        "mrconfigid": [m["mrconfigid"]],
        "debug": bool(appraisal.evidence.get("debug", False)),
        "accept_tcb_status": [appraisal.tcb.get("status", "UpToDate")],
    }
