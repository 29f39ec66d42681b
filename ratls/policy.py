"""Verifier policy: YAML, versioned, typed. Unknown or misspelled keys are errors that
name the full key path, so a typo can never silently turn a check off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from .errors import PolicyError, UsageError
from .timeutil import parse_duration
from .yamlfile import KeyedReader, read_yaml

SUPPORTED_VERSION = 1
KNOWN_PLATFORMS = ("sev-snp", "tdx", "azure-snp-vtpm", "azure-tdx-vtpm")
TCB_FIELDS = ("bl", "tee", "snp", "ucode", "fmc")
PRODUCTS = ("milan", "genoa", "turin")
_HEX = re.compile(r"^[0-9a-fA-F]*$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class _Map(KeyedReader):
    """A policy mapping: KeyedReader plus the typed getters policies need."""

    def __init__(self, data: Any, path: str) -> None:
        super().__init__(data, path, PolicyError)

    def _key(self, key: str) -> str:
        return self.key_path(key)

    def boolean(self, key: str, default: bool | None) -> bool | None:
        value = self.get(key, default)
        if value is not None and not isinstance(value, bool):
            raise PolicyError(f"{self._key(key)}: expected true or false, got {value!r}")
        return value

    def integer(self, key: str, default: int | None = None, *, lo: int = 0, hi: int = 2**64) -> int | None:
        value = self.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise PolicyError(f"{self._key(key)}: expected an integer in {lo}..{hi}, got {value!r}")
        return value

    def hex_list(self, key: str, size: int) -> list[bytes] | None:
        value = self.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise PolicyError(f"{self._key(key)}: expected a list of {size}-byte hex strings")
        return [_hex(item, size, f"{self._key(key)}[{i}]") for i, item in enumerate(value)]

    def hex_value(self, key: str, size: int) -> bytes | None:
        value = self.get(key)
        return None if value is None else _hex(value, size, self._key(key))

    def str_list(self, key: str, allowed: tuple[str, ...] | None = None) -> list[str] | None:
        value = self.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PolicyError(f"{self._key(key)}: expected a list of strings")
        if allowed is not None:
            for v in value:
                if v not in allowed:
                    raise PolicyError(f"{self._key(key)}: '{v}' is not one of {', '.join(allowed)}")
        return value

    def sub(self, key: str) -> _Map | None:
        if not self.has(key):
            self.used.add(key)
            return None
        return _Map(self.get(key), self._key(key))


def _hex(value: Any, size: int, path: str) -> bytes:
    if isinstance(value, int) and not isinstance(value, bool):
        raise PolicyError(f"{path}: write hex values as quoted strings (YAML read a number)")
    if not isinstance(value, str) or not _HEX.match(value) or len(value) != 2 * size:
        raise PolicyError(f"{path}: expected {2 * size} hex digits ({size} bytes), got {str(value)[:80]!r}")
    return bytes.fromhex(value)


@dataclass(frozen=True)
class MinTcb:
    bl: int | None = None
    tee: int | None = None
    snp: int | None = None
    ucode: int | None = None
    fmc: int | None = None

    def items(self) -> list[tuple[str, int]]:
        return [(n, getattr(self, n)) for n in TCB_FIELDS if getattr(self, n) is not None]


@dataclass(frozen=True)
class GuestPolicyRules:
    debug: bool | None = False
    migrate_ma: bool | None = False
    smt: bool | None = None
    single_socket: bool | None = None
    cxl_allow: bool | None = None
    mem_aes_256_xts: bool | None = None
    ciphertext_hiding: bool | None = None
    page_swap_disable: bool | None = None


@dataclass(frozen=True)
class SnpPolicy:
    measurements: list[bytes] | None = None
    min_tcb: dict[str, MinTcb] = field(default_factory=dict)  # product or "*" -> minimum
    guest_policy: GuestPolicyRules = field(default_factory=GuestPolicyRules)
    vmpl: list[int] | None = None
    chip_ids: list[bytes] | None = None
    host_data: bytes | None = None
    id_key_digests: list[bytes] | None = None
    author_key_digests: list[bytes] | None = None
    signing_keys: list[str] | None = None
    products: list[str] | None = None
    min_guest_svn: int | None = None
    min_firmware: tuple[int, int, int] | None = None
    report_data: bytes | None = None


TDX_TCB_STATUSES = ("UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
                    "OutOfDate", "OutOfDateConfigurationNeeded")


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
    accept_tcb_status: list[str] = field(default_factory=lambda: ["UpToDate"])
    reject_advisories: list[str] = field(default_factory=list)
    min_tcb_eval_data_number: int | None = None
    report_data: bytes | None = None


@dataclass(frozen=True)
class VtpmPolicy:
    """Azure vTPM: allowed SHA-256 PCR values by index (any listed value passes)."""

    pcrs: dict[int, list[bytes]] = field(default_factory=dict)


@dataclass(frozen=True)
class ClaimsPolicy:
    models: dict[str, str] | None = None
    config: str | None = None
    max_age: timedelta | None = None


@dataclass(frozen=True)
class Policy:
    version: int = SUPPORTED_VERSION
    platforms: list[str] = field(default_factory=lambda: ["sev-snp"])
    allow_simulated: bool = False
    simulated_roots: list[str] = field(default_factory=list)  # SHA-256 of pinned sim ARKs
    snp: SnpPolicy = field(default_factory=SnpPolicy)
    tdx: TdxPolicy = field(default_factory=TdxPolicy)
    vtpm: VtpmPolicy = field(default_factory=VtpmPolicy)
    claims: ClaimsPolicy = field(default_factory=ClaimsPolicy)
    source: str = "<built-in>"
    trust_on_first_use: bool = False


def _min_tcb(m: _Map) -> MinTcb:
    out = MinTcb(**{n: m.integer(n, lo=0, hi=255) for n in TCB_FIELDS})
    m.finish()
    return out


def _parse_min_tcb(value: _Map | None) -> dict[str, MinTcb]:
    if value is None:
        return {}
    if any(k in value.data for k in PRODUCTS) or any(k == "*" for k in value.data):
        out = {}
        for product in (*PRODUCTS, "*"):
            sub = value.sub(product)
            if sub is not None:
                out[product] = _min_tcb(sub)
        value.finish()
        return out
    return {"*": _min_tcb(value)}


def _parse_snp(m: _Map) -> SnpPolicy:
    gp = m.sub("guest_policy")
    rules = GuestPolicyRules()
    if gp is not None:
        rules = GuestPolicyRules(
            debug=gp.boolean("debug", False),
            migrate_ma=gp.boolean("migrate_ma", False),
            smt=gp.boolean("smt", None),
            single_socket=gp.boolean("single_socket", None),
            cxl_allow=gp.boolean("cxl_allow", None),
            mem_aes_256_xts=gp.boolean("mem_aes_256_xts", None),
            ciphertext_hiding=gp.boolean("ciphertext_hiding", None),
            page_swap_disable=gp.boolean("page_swap_disable", None),
        )
        gp.finish()
    vmpl_raw = m.get("vmpl")
    vmpl: list[int] | None
    if vmpl_raw is None:
        vmpl = None
    else:
        vmpl = vmpl_raw if isinstance(vmpl_raw, list) else [vmpl_raw]
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 3 for v in vmpl):
            raise PolicyError(f"{m.path}.vmpl: expected an integer 0-3 or a list of them")
    fw = m.get("min_firmware")
    min_fw = None
    if fw is not None:
        match = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", str(fw))
        if not match:
            raise PolicyError(f"{m.path}.min_firmware: expected MAJOR.MINOR[.BUILD], got {fw!r}")
        min_fw = (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))
    policy = SnpPolicy(
        measurements=m.hex_list("measurements", 48),
        min_tcb=_parse_min_tcb(m.sub("min_tcb")),
        guest_policy=rules,
        vmpl=vmpl,
        chip_ids=m.hex_list("chip_ids", 64),
        host_data=m.hex_value("host_data", 32),
        id_key_digests=m.hex_list("id_key_digests", 48),
        author_key_digests=m.hex_list("author_key_digests", 48),
        signing_keys=m.str_list("signing_keys", ("vcek", "vlek")),
        products=m.str_list("products", PRODUCTS),
        min_guest_svn=m.integer("min_guest_svn", lo=0, hi=2**32 - 1),
        min_firmware=min_fw,
        report_data=m.hex_value("report_data", 64),
    )
    m.finish()
    return policy


def _indexed_hex(m: _Map, key: str, size: int, hi: int) -> dict[int, list[bytes]]:
    raw = m.get(key)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise PolicyError(f"{m.path}.{key}: expected a mapping of index (0-{hi}) to hex value(s)")
    out: dict[int, list[bytes]] = {}
    for index, value in raw.items():
        where = f"{m.path}.{key}.{index}"
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= hi:
            raise PolicyError(f"{where}: index must be an integer 0-{hi}")
        values = value if isinstance(value, list) else [value]
        if not values:
            raise PolicyError(f"{where}: empty list would accept nothing; remove the entry or list values")
        out[index] = [_hex(v, size, f"{where}[{i}]") for i, v in enumerate(values)]
    return out


def _parse_tdx(m: _Map) -> TdxPolicy:
    status = m.str_list("accept_tcb_status", TDX_TCB_STATUSES)
    if status is not None and not status:
        raise PolicyError(f"{m.path}.accept_tcb_status: empty list accepts no TCB at all")
    advisories = m.str_list("reject_advisories") or []
    for i, adv in enumerate(advisories):
        if not re.fullmatch(r"INTEL-SA-\d{5}", adv):
            raise PolicyError(f"{m.path}.reject_advisories[{i}]: '{adv}' is not an advisory id like INTEL-SA-00334")
    policy = TdxPolicy(
        mrtd=m.hex_list("mrtd", 48),
        rtmr=_indexed_hex(m, "rtmr", 48, 3),
        mrconfigid=m.hex_list("mrconfigid", 48),
        mrowner=m.hex_list("mrowner", 48),
        mrownerconfig=m.hex_list("mrownerconfig", 48),
        mrseam=m.hex_list("mrseam", 48),
        debug=bool(m.boolean("debug", False)),
        sept_ve_disable=bool(m.boolean("sept_ve_disable", True)),
        accept_tcb_status=status or ["UpToDate"],
        reject_advisories=advisories,
        min_tcb_eval_data_number=m.integer("min_tcb_eval_data_number", lo=0, hi=2**32 - 1),
        report_data=m.hex_value("report_data", 64),
    )
    m.finish()
    return policy


def _parse_vtpm(m: _Map) -> VtpmPolicy:
    policy = VtpmPolicy(pcrs=_indexed_hex(m, "pcrs", 32, 23))
    m.finish()
    return policy


def _parse_claims(m: _Map) -> ClaimsPolicy:
    models = m.get("models")
    if models is not None:
        if not isinstance(models, dict):
            raise PolicyError(f"{m.path}.models: expected a mapping of model name to sha256:<hex>")
        for name, digest in models.items():
            if not isinstance(digest, str) or not _DIGEST.match(digest):
                raise PolicyError(f"{m.path}.models.{name}: expected sha256:<64 lowercase hex>, got {digest!r}")
    config = m.get("config")
    if config is not None and (not isinstance(config, str) or not _DIGEST.match(config)):
        raise PolicyError(f"{m.path}.config: expected sha256:<64 lowercase hex>, got {config!r}")
    max_age_raw = m.get("max_age")
    try:
        max_age = parse_duration(max_age_raw, what=f"{m.path}.max_age") if max_age_raw is not None else None
    except UsageError as exc:
        raise PolicyError(exc.message, hint=exc.hint) from None
    out = ClaimsPolicy(models=models, config=config, max_age=max_age)
    m.finish()
    return out


def parse_policy(data: Any, source: str = "<memory>") -> Policy:
    top = _Map(data, "policy")
    version = top.get("version")
    if version is None:
        raise PolicyError("policy.version: missing", hint=f"add 'version: {SUPPORTED_VERSION}' at the top")
    if version != SUPPORTED_VERSION:
        raise PolicyError(f"policy.version: {version!r} is not supported (this ratls reads version "
                          f"{SUPPORTED_VERSION})")
    platforms = top.str_list("platforms", KNOWN_PLATFORMS) or []
    allow_sim = top.boolean("allow_simulated", False) or False
    sim = top.sub("simulated")
    roots: list[str] = []
    if sim is not None:
        raw = sim.get("root_sha256")
        raw_list = raw if isinstance(raw, list) else [raw] if raw is not None else []
        for i, item in enumerate(raw_list):
            if not isinstance(item, str) or not re.fullmatch(r"[0-9a-f]{64}", item):
                raise PolicyError(f"policy.simulated.root_sha256[{i}]: expected 64 lowercase hex digits")
            roots.append(item)
        sim.finish()
    if allow_sim and not roots:
        raise PolicyError("policy.simulated.root_sha256: allow_simulated is true but no simulated root is pinned",
                          hint="run 'ratls sim root' and paste its sha256 here")
    snp_map = top.sub("sev-snp")
    snp = _parse_snp(snp_map) if snp_map is not None else SnpPolicy()
    tdx_map = top.sub("tdx")
    tdx = _parse_tdx(tdx_map) if tdx_map is not None else TdxPolicy()
    vtpm_map = top.sub("vtpm")
    vtpm = _parse_vtpm(vtpm_map) if vtpm_map is not None else VtpmPolicy()
    claims_map = top.sub("claims")
    claims = _parse_claims(claims_map) if claims_map is not None else ClaimsPolicy()
    tofu = top.boolean("trust_on_first_use", False) or False
    top.finish()
    if not platforms and not allow_sim:
        raise PolicyError("policy.platforms: no platform is accepted", hint="list e.g. [sev-snp]")
    return Policy(version=version, platforms=platforms, allow_simulated=allow_sim, simulated_roots=roots,
                  snp=snp, tdx=tdx, vtpm=vtpm, claims=claims, source=source, trust_on_first_use=tofu)


def load_policy(path: str | Path) -> Policy:
    p = Path(path)
    data = read_yaml(p, "policy file", error=PolicyError,
                     missing_hint="check the path, or write one with 'ratls policy init'")
    try:
        return parse_policy(data, source=str(p))
    except PolicyError as exc:
        raise PolicyError(f"{p}: {exc.message}", hint=exc.hint) from None
