"""The ``sev-snp:`` section of a verifier policy: what an SEV-SNP report (bare, simulated or
under an Azure paravisor) must show. Parsing only; the checks are in ``appraise``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from ...errors import PolicyError
from ...policy import ALL, Every
from ...yamlfile import KeyedReader
from .abi import Product, SigningKey

TCB_FIELDS = ("bl", "tee", "snp", "ucode", "fmc")
PRODUCTS = tuple(p.value for p in Product)


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


# debug/migrate_ma/smt/cxl are permissions: "false" forbids them, "true" tolerates them. The
# others are hardening requirements: "true" requires them.
PERMISSIONS = ("debug", "migrate_ma", "smt", "cxl_allow")
GUEST_POLICY_BITS = ("debug", "migrate_ma", "smt", "single_socket", "cxl_allow", "mem_aes_256_xts",
                     "ciphertext_hiding", "page_swap_disable")


@dataclass(frozen=True)
class SnpPolicy:
    measurements: list[bytes] | None = None
    # product -> minimum; the key ALL applies to every product without an entry of its own
    min_tcb: dict[Product | Every, MinTcb] = field(default_factory=dict)
    guest_policy: GuestPolicyRules = field(default_factory=GuestPolicyRules)
    vmpl: list[int] | None = None
    chip_ids: list[bytes] | None = None
    host_data: bytes | None = None
    id_key_digests: list[bytes] | None = None
    author_key_digests: list[bytes] | None = None
    signing_keys: list[SigningKey] | None = None
    products: list[Product] | None = None
    min_guest_svn: int | None = None
    min_firmware: tuple[int, int, int] | None = None
    report_data: bytes | None = None

    def min_tcb_for(self, product: Product | None) -> MinTcb | None:
        if product is not None and product in self.min_tcb:
            return self.min_tcb[product]
        return self.min_tcb.get(ALL)


def _min_tcb(m: KeyedReader) -> MinTcb:
    out = MinTcb(**{n: m.integer(n, lo=0, hi=255) for n in TCB_FIELDS})
    m.finish()
    return out


def _parse_min_tcb(value: KeyedReader | None) -> dict[Product | Every, MinTcb]:
    if value is None:
        return {}
    if any(k in value.data for k in PRODUCTS) or "*" in value.data:
        out: dict[Product | Every, MinTcb] = {}
        for product in Product:
            sub = value.sub(product.value)
            if sub is not None:
                out[product] = _min_tcb(sub)
        every = value.sub("*")
        if every is not None:
            out[ALL] = _min_tcb(every)
        value.finish()
        return out
    return {ALL: _min_tcb(value)}


def _guest_policy(gp: KeyedReader | None) -> GuestPolicyRules:
    if gp is None:
        return GuestPolicyRules()
    defaults = GuestPolicyRules()
    rules = GuestPolicyRules(**{bit: gp.boolean(bit, getattr(defaults, bit)) for bit in GUEST_POLICY_BITS})
    gp.finish()
    return rules


def _vmpl(m: KeyedReader) -> list[int] | None:
    raw = m.get("vmpl")
    if raw is None:
        return None
    vmpl = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 3 for v in vmpl):
        raise PolicyError(f"{m.key_path('vmpl')}: expected an integer 0-3 or a list of them")
    return vmpl


def _min_firmware(m: KeyedReader) -> tuple[int, int, int] | None:
    fw = m.get("min_firmware")
    if fw is None:
        return None
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", str(fw))
    if not match:
        raise PolicyError(f"{m.key_path('min_firmware')}: expected MAJOR.MINOR[.BUILD], got {fw!r}")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def _enums(values: list[str] | None, kind: type[Enum]) -> list | None:  # type: ignore[type-arg]
    return None if values is None else [kind(v) for v in values]


def parse_snp_policy(m: KeyedReader) -> SnpPolicy:
    policy = SnpPolicy(
        measurements=m.hex_list("measurements", 48),
        min_tcb=_parse_min_tcb(m.sub("min_tcb")),
        guest_policy=_guest_policy(m.sub("guest_policy")),
        vmpl=_vmpl(m),
        chip_ids=m.hex_list("chip_ids", 64),
        host_data=m.hex_value("host_data", 32),
        id_key_digests=m.hex_list("id_key_digests", 48),
        author_key_digests=m.hex_list("author_key_digests", 48),
        signing_keys=_enums(m.str_list("signing_keys", tuple(k.value for k in SigningKey if k.value != "none")),
                            SigningKey),
        products=_enums(m.str_list("products", PRODUCTS), Product),
        min_guest_svn=m.integer("min_guest_svn", lo=0, hi=2**32 - 1),
        min_firmware=_min_firmware(m),
        report_data=m.hex_value("report_data", 64),
    )
    m.finish()
    return policy

