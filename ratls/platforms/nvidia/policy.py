"""The ``nvidia-gpu:`` section of a verifier policy: which GPUs must accompany the CPU's evidence
and what they must show. Parsing only; the checks are in ``appraise``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import PolicyError
from ...yamlfile import KeyedReader
from .types import GpuArch

_DRIVER = re.compile(r"^\d+(\.\d+){1,3}$")
_VBIOS = re.compile(r"^[0-9a-fA-F]{2}(\.[0-9a-fA-F]{2}){4}$")


@dataclass(frozen=True)
class GpuPolicy:
    required: bool = False  # True: a certificate without GPU evidence is refused
    count: int | None = None  # exact number of GPUs (None: any, at least one when required)
    architectures: tuple[GpuArch, ...] = ()  # empty: any
    driver_versions: tuple[str, ...] = ()  # empty: any (subject to min_driver_version)
    min_driver_version: str | None = None
    vbios_versions: tuple[str, ...] = ()  # lower case; empty: any (subject to min_vbios_version)
    min_vbios_version: str | None = None
    require_rim_match: bool = True  # every GPU's measurements matched against NVIDIA's RIMs
    require_cc: bool = True  # the gateway read CC mode on from the driver
    allow_devtools: bool = False
    require_ocsp: bool = False  # OCSP answers for the device chain must be present (stapled or fetched)
    allow_unknown_ocsp: bool = False  # "unknown" from NVIDIA's OCSP is refused unless this is true


def version_key(version: str) -> tuple[int, ...]:
    """Dotted versions compare field by field as numbers (VBIOS fields are hex)."""
    base = 16 if _VBIOS.match(version) else 10
    return tuple(int(part, base) for part in version.split("."))


def _quoted(m: KeyedReader, key: str) -> None:
    # YAML reads 575.32 as a number and 550.10 as 550.1: versions must be quoted strings
    raw = m.get(key)
    for value in raw if isinstance(raw, list) else [raw]:
        if value is not None and not isinstance(value, str):
            raise PolicyError(f"{m.path}.{key}: {value!r} must be a quoted string",
                              hint=f"quote it: \"{value}\" (YAML reads unquoted versions as numbers)")


def _versions(m: KeyedReader, key: str, pattern: re.Pattern[str], example: str) -> tuple[str, ...]:
    _quoted(m, key)
    values = m.str_list(key) or []
    for i, value in enumerate(values):
        if not pattern.match(value):
            raise PolicyError(f"{m.path}.{key}[{i}]: '{value}' is not a version like {example}")
    return tuple(v.lower() for v in values)


def _minimum(m: KeyedReader, key: str, pattern: re.Pattern[str], example: str) -> str | None:
    _quoted(m, key)
    value = m.text(key, None, optional=True)
    if value is not None and not pattern.match(value):
        raise PolicyError(f"{m.path}.{key}: '{value}' is not a version like {example}")
    return value.lower() if value is not None else None


def parse_gpu_policy(m: KeyedReader) -> GpuPolicy:
    archs = m.str_list("architectures", [a.value for a in GpuArch]) or []
    policy = GpuPolicy(
        required=bool(m.boolean("required", True)),  # writing the section means GPUs are expected
        count=m.integer("count", lo=1, hi=16),  # a certificate carries at most 16 devices
        architectures=tuple(GpuArch(a) for a in archs),
        driver_versions=_versions(m, "driver_versions", _DRIVER, "550.90.07"),
        min_driver_version=_minimum(m, "min_driver_version", _DRIVER, "550.90.07"),
        vbios_versions=_versions(m, "vbios_versions", _VBIOS, "96.00.9f.00.01"),
        min_vbios_version=_minimum(m, "min_vbios_version", _VBIOS, "96.00.9f.00.01"),
        require_rim_match=bool(m.boolean("require_rim_match", True)),
        require_cc=bool(m.boolean("require_cc", True)),
        allow_devtools=bool(m.boolean("allow_devtools", False)),
        require_ocsp=bool(m.boolean("require_ocsp", False)),
        allow_unknown_ocsp=bool(m.boolean("allow_unknown_ocsp", False)),
    )
    m.finish()
    return policy
