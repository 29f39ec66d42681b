"""The ``tdx:`` section of a verifier policy: what a TD quote (bare, simulated or under an Azure
paravisor) must show. Parsing only; the checks are in ``appraise``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from ...errors import PolicyError
from ...yamlfile import KeyedReader


class TcbStatus(StrEnum):
    """Intel's TCB levels as its collateral states them for this platform."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"


TDX_TCB_STATUSES = tuple(s.value for s in TcbStatus)


@dataclass(frozen=True)
class TdxPolicy:
    mrtd: list[bytes] | None = None
    rtmr: dict[int, list[bytes]] = field(default_factory=dict)
    mrconfigid: list[bytes] | None = None
    mrowner: list[bytes] | None = None
    mrownerconfig: list[bytes] | None = None
    mrseam: list[bytes] | None = None
    debug: bool = False
    sept_ve_disable: bool = True  # True: SEPT_VE_DISABLE must be set; False: either value is accepted
    accept_tcb_status: list[TcbStatus] = field(default_factory=lambda: [TcbStatus.UP_TO_DATE])
    reject_advisories: list[str] = field(default_factory=list)
    min_tcb_eval_data_number: int | None = None
    report_data: bytes | None = None


def _advisories(m: KeyedReader) -> list[str]:
    advisories = m.str_list("reject_advisories") or []
    for i, adv in enumerate(advisories):
        if not re.fullmatch(r"INTEL-SA-\d{5}", adv):
            raise PolicyError(f"{m.path}.reject_advisories[{i}]: '{adv}' is not an advisory id like INTEL-SA-00334")
    return advisories


def parse_tdx_policy(m: KeyedReader) -> TdxPolicy:
    status = m.str_list("accept_tcb_status", TDX_TCB_STATUSES)
    if status is not None and not status:
        raise PolicyError(f"{m.path}.accept_tcb_status: empty list accepts no TCB at all")
    policy = TdxPolicy(
        mrtd=m.hex_list("mrtd", 48),
        rtmr=m.indexed_hex("rtmr", 48, 3),
        mrconfigid=m.hex_list("mrconfigid", 48),
        mrowner=m.hex_list("mrowner", 48),
        mrownerconfig=m.hex_list("mrownerconfig", 48),
        mrseam=m.hex_list("mrseam", 48),
        debug=bool(m.boolean("debug", False)),
        sept_ve_disable=bool(m.boolean("sept_ve_disable", True)),
        accept_tcb_status=[TcbStatus(s) for s in status] if status else [TcbStatus.UP_TO_DATE],
        reject_advisories=_advisories(m),
        min_tcb_eval_data_number=m.integer("min_tcb_eval_data_number", lo=0, hi=2**32 - 1),
        report_data=m.hex_value("report_data", 64),
    )
    m.finish()
    return policy

