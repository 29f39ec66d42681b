"""compare_measurements on NVIDIA's reports and RIMs (the expected mismatch lists), and the rules:
conflicts, missing blocks, sizes, alternatives, NVDEC0, missing RIMs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ratls.platforms.nvidia.measurements import compare_measurements
from ratls.platforms.nvidia.rim import parse_rim
from ratls.platforms.nvidia.types import MeasurementBlock, Rim, RimKind, RimMeasurement

from .rim_testlib import DRIVER_TEST, LOCAL_RIMS, VBIOS_PROD, VBIOS_TEST, digest, sim_signer

NVDEC0_STATUS = 11  # opaque-data TLV type


def read_report(raw: bytes) -> tuple[dict[int, MeasurementBlock], int | None]:
    """Measurement blocks and NVDEC0 status of an SPDM GET_MEASUREMENTS request || response
    (ALGORITHM.md section 1). A minimal reader for these tests only, until the SPDM parser lands."""
    response = raw[37:]
    assert response[1] == 0x60
    record_len = int.from_bytes(response[5:8], "little")
    record, blocks, pos = response[8:8 + record_len], {}, 0
    while pos < record_len:
        index, size = record[pos], int.from_bytes(record[pos + 2:pos + 4], "little")
        body = record[pos + 4:pos + 4 + size]
        blocks[index] = MeasurementBlock(index, body[0], body[3:3 + int.from_bytes(body[1:3], "little")])
        pos += 4 + size
    rest = response[8 + record_len + 32:]
    opaque_len = int.from_bytes(rest[:2], "little")
    assert len(rest) == 2 + opaque_len + 96
    opaque, fields, pos = rest[2:2 + opaque_len], {}, 0
    while pos < opaque_len:
        kind, length = int.from_bytes(opaque[pos:pos + 2], "little"), int.from_bytes(opaque[pos + 2:pos + 4], "little")
        fields[kind] = opaque[pos + 4:pos + 4 + length]
        pos += 4 + length
    nvdec0 = fields.get(NVDEC0_STATUS)
    return blocks, nvdec0[0] if nvdec0 else None


def report(vectors: Path, name: str) -> tuple[dict[int, MeasurementBlock], int | None]:
    return read_report(bytes.fromhex((vectors / name).read_text().strip()))


def rim(vectors: Path, name: str) -> Rim:
    return parse_rim((vectors / name).read_bytes())


def indices(result: object) -> list[int]:
    return [i for i, _ in result.mismatched]  # type: ignore[attr-defined]


# --- NVIDIA's vectors -------------------------------------------------------------------------------------------------

def test_go_nvtrust_matches_the_test_rims(nvidia_vectors: Path) -> None:
    blocks, nvdec0 = report(nvidia_vectors, "go-nvtrust/attestationReport.txt")
    assert len(blocks) == 64 and nvdec0 == 0x55
    driver, vbios = rim(nvidia_vectors, DRIVER_TEST), rim(nvidia_vectors, VBIOS_TEST)
    result = compare_measurements(blocks, driver, vbios, nvdec0)
    assert result.ok and result.mismatched == ()
    assert result.compared == 32  # 21 driver + 12 VBIOS golden, index 35 skipped: NVDEC0 is disabled
    assert [c.name for c in result.checks] == ["gpu.measurements", "gpu.measurements.conflict"]
    assert "index 35 skipped" in result.checks[0].detail
    # NVIDIA's 2.7.3 never skips index 35 (an enum/bytes comparison): all 33 match as well.
    full = compare_measurements(blocks, driver, vbios, None)
    assert full.ok and full.compared == 33


def test_go_nvtrust_with_the_prod_vbios_rim(nvidia_vectors: Path) -> None:
    blocks, nvdec0 = report(nvidia_vectors, "go-nvtrust/attestationReport.txt")
    result = compare_measurements(blocks, rim(nvidia_vectors, DRIVER_TEST), rim(nvidia_vectors, VBIOS_PROD), nvdec0)
    assert not result.ok
    assert result.mismatched == ((1, RimKind.VBIOS), (2, RimKind.VBIOS), (3, RimKind.VBIOS), (9, RimKind.VBIOS))
    check = result.checks[0]
    assert check.name == "gpu.measurements" and not check.ok
    assert "[1, 2, 3, 9]" in check.detail and "1 (VBIOS)" in check.detail


def test_hopper_trustee_against_the_test_rims(nvidia_vectors: Path) -> None:
    blocks, nvdec0 = report(nvidia_vectors, "hopper_trustee/hopperAttestationReport.txt")
    result = compare_measurements(blocks, rim(nvidia_vectors, DRIVER_TEST), rim(nvidia_vectors, VBIOS_TEST), nvdec0)
    assert indices(result) == [1, 2, 3, 7, 9, 11, 21, 22, 25, 26, 27, 29, 30, 31, 32, 34, 36, 37, 39, 40]
    sources = dict(result.mismatched)
    assert {i for i, k in sources.items() if k == RimKind.VBIOS} == {1, 2, 3, 9, 11}
    assert "7 (Driver)" in result.checks[0].detail


@pytest.mark.parametrize(("folder", "vbios", "expected"), [
    ("hopper_535.86.09/hopperAttestationReport.txt", "1010_0200_882_96005E0001_PROD", []),
    ("hopper_580.159.03/hopperAttestationReport.txt", "1010_0205_862_9600740020_PROD", [9]),
    ("hopper_570.124.03/hopperAttestationReportExpired.txt", "1010_0205_862_96005E0004_PROD", [9]),
])
def test_vbios_only(nvidia_vectors: Path, folder: str, vbios: str, expected: list[int]) -> None:
    blocks, nvdec0 = report(nvidia_vectors, f"nvidia-attestation-sdk/{folder}")
    result = compare_measurements(blocks, None, rim(nvidia_vectors, f"{LOCAL_RIMS}/{vbios}.swidtag"), nvdec0)
    assert result.compared == 12 and indices(result) == expected
    assert not result.ok  # no driver RIM: said so, and the caller decides whether that matters
    missing = [c for c in result.checks if c.name == "gpu.measurements.driver-rim"]
    assert len(missing) == 1 and not missing[0].ok
    assert result.checks[0].ok == (not expected)


# --- rules, on synthetic values ------------------------------------------------------------------------------------

def golden(*entries: tuple[int, bool, tuple[bytes, ...]]) -> Rim:
    return Rim(version="1", product="GH100", tag_id="t", measurements={
        i: RimMeasurement(index=i, active=active, size=48, alternatives=alts) for i, active, alts in entries})


def blocks_for(values: dict[int, bytes]) -> dict[int, MeasurementBlock]:
    return {i + 1: MeasurementBlock(i + 1, 1, v) for i, v in values.items()}


def test_alternatives_and_inactive_entries() -> None:
    driver = golden((0, True, (digest(1), digest(2))), (1, False, (digest(3),)))
    vbios = golden((2, True, (digest(4),)))
    result = compare_measurements(blocks_for({0: digest(2), 1: digest(99), 2: digest(4)}), driver, vbios, 0xAA)
    assert result.ok and result.compared == 2


def test_missing_block_and_wrong_size() -> None:
    driver = golden((0, True, (digest(1),)), (1, True, (digest(2),)))
    vbios = golden((2, True, (digest(3),)))
    blocks = blocks_for({0: digest(1), 2: digest(3)[:32]})
    result = compare_measurements(blocks, driver, vbios, 0xAA)
    assert result.mismatched == ((1, RimKind.DRIVER), (2, RimKind.VBIOS))
    assert "no SPDM block 2" in result.checks[0].detail and "32 bytes, the RIM says 48" in result.checks[0].detail


def test_size_mismatch_even_when_a_prefix_matches() -> None:
    rim48 = golden((0, True, (digest(1),)))
    short = replace(rim48, measurements={0: RimMeasurement(0, True, 32, (digest(1)[:32],))})
    result = compare_measurements(blocks_for({0: digest(1)}), short, golden(), 0xAA)
    assert result.mismatched == ((0, RimKind.DRIVER),)


def test_conflict_is_a_failed_check() -> None:
    driver = golden((4, True, (digest(4),)), (5, True, (digest(5),)))
    vbios = golden((5, True, (digest(5),)))
    result = compare_measurements(blocks_for({4: digest(4), 5: digest(5)}), driver, vbios, 0xAA)
    assert not result.ok and result.mismatched == ()
    conflict = next(c for c in result.checks if c.name == "gpu.measurements.conflict")
    assert not conflict.ok and "[5]" in conflict.detail


@pytest.mark.parametrize(("status", "compared", "mismatched", "nvdec0_check"), [
    (0x55, 1, [], None),  # disabled: index 35 skipped
    (0xAA, 2, [35], None),  # enabled: compared like any other
    (None, 2, [35], None),  # not reported: nothing skipped
    (0x12, 2, [35], False),  # neither: a failed check
])
def test_nvdec0(status: int | None, compared: int, mismatched: list[int], nvdec0_check: bool | None) -> None:
    driver = golden((7, True, (digest(7),)), (35, True, (digest(35),)))
    result = compare_measurements(blocks_for({7: digest(7), 35: digest(0)}), driver, golden(), status)
    assert result.compared == compared and indices(result) == mismatched
    checks = {c.name: c.ok for c in result.checks}
    assert checks.get("gpu.measurements.nvdec0") == nvdec0_check


def test_missing_rims_and_nothing_to_compare() -> None:
    result = compare_measurements({}, None, None, None)
    assert not result.ok and result.compared == 0
    assert {c.name for c in result.checks if not c.ok} == {
        "gpu.measurements", "gpu.measurements.driver-rim", "gpu.measurements.vbios-rim"}
    only_inactive = compare_measurements({}, golden((0, False, (digest(0),))), golden(), 0xAA)
    assert not only_inactive.ok and "no golden measurements" in only_inactive.checks[0].detail


def test_simulated_rims_compare_like_nvidias() -> None:
    signer = sim_signer()
    driver = parse_rim(signer.sign({7: (True, (digest(7),)), 21: (True, (digest(1), digest(21)))}))
    vbios = parse_rim(signer.sign({}, version="96.00.9F.00.01"))
    result = compare_measurements(blocks_for({7: digest(7), 21: digest(21)}), driver, vbios, 0xAA)
    assert result.ok and result.compared == 2
