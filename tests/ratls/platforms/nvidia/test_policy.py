"""The ``nvidia-gpu:`` policy section: parsing, errors that name the key, README's example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ratls.errors import PolicyError
from ratls.platforms.nvidia.policy import GpuPolicy, version_key
from ratls.platforms.nvidia.types import GpuArch
from ratls.policy import parse_policy

README = Path(__file__).resolve().parents[4] / "README.md"


def _policy(section: object) -> GpuPolicy:
    return parse_policy({"version": 1, "platforms": ["sev-snp"], "nvidia-gpu": section}).nvidia_gpu


def _readme_block(first_line: str) -> dict:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    return yaml.safe_load(next(b for b in blocks if b.startswith(first_line)))


def test_readme_policy_example_parses_as_documented() -> None:
    gpu = _policy(_readme_block("nvidia-gpu:")["nvidia-gpu"])
    assert gpu == GpuPolicy(required=True, count=8, architectures=(GpuArch.HOPPER,), driver_versions=("570.124.06",),
                            min_driver_version="570.124", vbios_versions=("96.00.9f.00.01",),
                            min_vbios_version="96.00.9f.00.01")


def test_readme_gateway_example_parses_as_documented() -> None:
    from gateway.config import GpuMode, OnGpuFailure, parse_config
    cfg = parse_config({"version": 1, **_readme_block("gpus:")})
    assert cfg.gpus.mode is GpuMode.NVML and cfg.gpus.count == 8 and cfg.gpus.on_failure is OnGpuFailure.REFUSE
    assert cfg.gpus.rim_dir == "/etc/ratls/rims" and not cfg.gpus.rim_online


def test_defaults_and_section_absent() -> None:
    assert _policy({}) == GpuPolicy(required=True)  # writing the section means GPUs are expected
    assert parse_policy({"version": 1, "platforms": ["sev-snp"]}).nvidia_gpu == GpuPolicy(required=False)


@pytest.mark.parametrize(("section", "words"), [
    ({"driver_versions": [575.32]}, "must be a quoted string"),
    ({"min_driver_version": 550.1}, "must be a quoted string"),
    ({"driver_versions": ["five"]}, "is not a version like"),
    ({"vbios_versions": ["96.00.9f"]}, "is not a version like"),
    ({"architectures": ["ampere"]}, "not one of"),
    ({"count": 0}, "count"),
    ({"requred": True}, "requred"),
])
def test_bad_sections_name_the_key(section: dict, words: str) -> None:
    with pytest.raises(PolicyError, match=words):
        _policy(section)


def test_versions_compare_as_numbers() -> None:
    assert version_key("570.124.06") > version_key("570.86.10")
    assert version_key("96.00.a5.00.01") > version_key("96.00.9f.00.01")
