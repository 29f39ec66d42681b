"""Comparing a GPU's SPDM measurement blocks with the golden values of its driver and VBIOS RIMs.

Golden = the active entries of both RIMs. RIM index i is SPDM block i + 1; the block must exist,
have the RIM's ``size`` and equal one of its ``alternatives``. Only verified RIMs belong here
(``VerifiedRim.rim``): this module trusts the values it is given.
"""

from __future__ import annotations

from collections.abc import Mapping

from ...appraisal import Check, failed, passed
from .types import MeasurementBlock, MeasurementResult, Nvdec0Status, Rim, RimKind, RimMeasurement

NAME = "gpu.measurements"
NVDEC0_INDEX = 35  # RIM index of the NVDEC0 engine's measurement (SPDM block 36)
_SOURCE = {RimKind.DRIVER: "Driver", RimKind.VBIOS: "VBIOS"}


def compare_measurements(blocks: Mapping[int, MeasurementBlock], driver: Rim | None, vbios: Rim | None,
                         nvdec0_status: int | None) -> MeasurementResult:
    """Checks: ``gpu.measurements`` (every compared golden value), ``gpu.measurements.conflict``
    (an index active in both RIMs, when both are given), ``gpu.measurements.driver-rim`` /
    ``.vbios-rim`` (failed when that RIM is missing: its values were not compared) and
    ``gpu.measurements.nvdec0`` (failed when the status is neither enabled nor disabled).
    A missing RIM fails the result; whether that matters is the caller's policy."""
    checks: list[Check] = []
    rims = {RimKind.DRIVER: driver, RimKind.VBIOS: vbios}
    for kind, rim in rims.items():
        if rim is None:
            checks.append(failed(f"{NAME}.{kind.value}-rim", f"no {kind.value} RIM: its golden measurements "
                                                             "were not compared"))
    golden = [(kind, m) for kind, rim in rims.items() if rim is not None
              for m in sorted(rim.measurements.values(), key=lambda m: m.index) if m.active]
    if driver is not None and vbios is not None:
        checks.append(_conflict_check(golden))
    skip_nvdec0, nvdec0_check = _nvdec0(nvdec0_status)
    if nvdec0_check is not None:
        checks.append(nvdec0_check)
    compared = [(kind, m) for kind, m in golden if not (skip_nvdec0 and m.index == NVDEC0_INDEX)]
    problems = [(m.index, kind, why) for kind, m in compared if (why := _mismatch(blocks, m)) is not None]
    mismatched = tuple(sorted((index, kind) for index, kind, _ in problems))
    checks.insert(0, _measurement_check(len(golden), compared, problems, skipped=len(golden) - len(compared)))
    return MeasurementResult(compared=len(compared), mismatched=mismatched, checks=checks)


def _mismatch(blocks: Mapping[int, MeasurementBlock], golden: RimMeasurement) -> str | None:
    block = blocks.get(golden.index + 1)
    if block is None:
        return f"no SPDM block {golden.index + 1}"
    if len(block.value) != golden.size:
        return f"block is {len(block.value)} bytes, the RIM says {golden.size}"
    if block.value not in golden.alternatives:
        return f"{block.value.hex()[:16]}... is none of the {len(golden.alternatives)} RIM value(s)"
    return None


def _measurement_check(golden: int, compared: list[tuple[RimKind, RimMeasurement]],
                       problems: list[tuple[int, RimKind, str]], *, skipped: int) -> Check:
    counts = ", ".join(f"{sum(1 for k, _ in compared if k == kind)} {_SOURCE[kind]}" for kind in RimKind)
    note = f"; index {NVDEC0_INDEX} skipped: NVDEC0 is disabled" if skipped else ""
    if not compared:
        return failed(NAME, f"no golden measurements to compare ({golden} active in the RIMs given{note})")
    if not problems:
        return passed(NAME, f"all {len(compared)} golden measurements match ({counts}){note}")
    listed = "; ".join(f"{index} ({_SOURCE[kind]}): {why}" for index, kind, why in sorted(problems))
    indices = sorted({index for index, _, _ in problems})
    return failed(NAME, f"{len(problems)} of {len(compared)} golden measurements differ, RIM indices (from 0) "
                        f"{indices}{note}: {listed}")


def _conflict_check(golden: list[tuple[RimKind, RimMeasurement]]) -> Check:
    name = f"{NAME}.conflict"
    driver = {m.index for kind, m in golden if kind == RimKind.DRIVER}
    both = sorted(driver & {m.index for kind, m in golden if kind == RimKind.VBIOS})
    if both:
        # Which RIM is right for such an index is unknowable: NVIDIA refuses the pair too.
        return failed(name, f"RIM indices {both} are active in both the driver and the VBIOS RIM")
    return passed(name, "no index is active in both the driver and the VBIOS RIM")


def _nvdec0(status: int | None) -> tuple[bool, Check | None]:
    """(skip index 35, check). A report without the field is compared in full (nothing skipped)."""
    if status is None:
        return False, None
    if status == Nvdec0Status.DISABLED:
        return True, None
    if status == Nvdec0Status.ENABLED:
        return False, None
    return False, failed(f"{NAME}.nvdec0", f"NVDEC0 status 0x{status:02x} is neither enabled (0xaa) nor "
                                           "disabled (0x55)")
