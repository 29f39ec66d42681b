"""Verifier policy: YAML, versioned, typed. Unknown or misspelled keys are errors that
name the full key path, so a typo can never silently turn a check off.

The top level (version, platforms, simulation, claims) is read here; every other section
belongs to the platforms that appraise against it, each declaring a :class:`PolicySection`
that the registry collects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any, Generic, TypeVar

from .errors import PolicyError
from .yamlfile import KeyedReader, read_yaml

SUPPORTED_VERSION = 1
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
T = TypeVar("T")


class Every(Enum):
    """The sentinel for "every one" (every model, every product) where a policy writes ``*``."""

    ALL = "*"


ALL = Every.ALL


def pinned_models(models: Mapping[str | Every, str]) -> list[tuple[str | Every, str, str]]:
    """(key, label, digest) in label order; ALL is labelled ``*`` as a policy writes it."""
    rows = [(key, key.value if isinstance(key, Every) else key, digest) for key, digest in models.items()]
    return sorted(rows, key=lambda row: row[1])


@dataclass(frozen=True)
class PolicySection(Generic[T]):
    """A top-level policy section owned by a platform (or shared by several: ``sev-snp`` is read
    by bare, simulated and Azure SEV-SNP). ``attr`` is the Python name (``policy.snp``)."""

    key: str
    attr: str
    parse: Callable[[KeyedReader], T]
    default: T
    explain: Callable[[T], list[Any]] | None = None  # -> policy_rules.Rule, for `ratls policy explain`
    check_spec: Callable[[str], Any] | None = None  # check name -> policy_rules.CheckSpec, for `policy diff`
    observe: Callable[[Any], dict[str, Any]] | None = None  # Appraisal -> a starting section (`policy init`)

    def of(self, policy: Policy) -> T:
        return policy.section(self)


@dataclass(frozen=True)
class ClaimsPolicy:
    models: dict[str | Every, str] | None = None  # model name (or ALL: the whole manifest) -> digest
    config: str | None = None
    max_age: timedelta | None = None


@dataclass(frozen=True)
class Policy:
    version: int = SUPPORTED_VERSION
    platforms: list[str] = field(default_factory=list)
    allow_simulated: bool = False
    simulated_roots: list[str] = field(default_factory=list)  # SHA-256 of pinned sim ARKs
    claims: ClaimsPolicy = field(default_factory=ClaimsPolicy)
    source: str = "<built-in>"
    trust_on_first_use: bool = False
    sections: Mapping[str, Any] = field(default_factory=dict)  # section key -> that section's parsed value

    def section(self, section: PolicySection[T]) -> T:
        value = self.sections.get(section.key)
        return section.default if value is None else value

    def __getattr__(self, name: str) -> Any:
        # policy.snp, policy.tdx, ...: a section by its Python name, for readers and tests
        if name.startswith("_"):
            raise AttributeError(name)
        from . import registry
        for section in registry.policy_sections():
            if section.attr == name:
                return self.section(section)
        raise AttributeError(f"policy has no section or field '{name}'")


def _parse_claims(m: KeyedReader) -> ClaimsPolicy:
    raw_models = m.get("models")
    models: dict[str | Every, str] | None = None
    if raw_models is not None:
        if not isinstance(raw_models, dict):
            raise PolicyError(f"{m.path}.models: expected a mapping of model name to sha256:<hex>")
        models = {}
        for name, digest in raw_models.items():
            if not isinstance(digest, str) or not _DIGEST.match(digest):
                raise PolicyError(f"{m.path}.models.{name}: expected sha256:<64 lowercase hex>, got {digest!r}")
            models[ALL if name == "*" else str(name)] = digest
    config = m.get("config")
    if config is not None and (not isinstance(config, str) or not _DIGEST.match(config)):
        raise PolicyError(f"{m.path}.config: expected sha256:<64 lowercase hex>, got {config!r}")
    out = ClaimsPolicy(models=models, config=config, max_age=m.duration("max_age"))
    m.finish()
    return out


def _simulated_roots(top: KeyedReader) -> list[str]:
    sim = top.sub("simulated")
    roots: list[str] = []
    if sim is None:
        return roots
    raw = sim.get("root_sha256")
    raw_list = raw if isinstance(raw, list) else [raw] if raw is not None else []
    for i, item in enumerate(raw_list):
        if not isinstance(item, str) or not re.fullmatch(r"[0-9a-f]{64}", item):
            raise PolicyError(f"policy.simulated.root_sha256[{i}]: expected 64 lowercase hex digits")
        roots.append(item)
    sim.finish()
    return roots


def _version(top: KeyedReader) -> int:
    version = top.get("version")
    if version is None:
        raise PolicyError("policy.version: missing", hint=f"add 'version: {SUPPORTED_VERSION}' at the top")
    if version != SUPPORTED_VERSION:
        raise PolicyError(f"policy.version: {version!r} is not supported (this ratls reads version "
                          f"{SUPPORTED_VERSION})")
    return int(version)


def parse_policy(data: Any, source: str = "<memory>") -> Policy:
    from . import registry
    top = KeyedReader(data, "policy", PolicyError)
    version = _version(top)
    accepted = registry.hardware_names()
    platforms = top.str_list("platforms", accepted) or []
    allow_sim = top.boolean("allow_simulated", False) or False
    roots = _simulated_roots(top)
    if allow_sim and not roots:
        raise PolicyError("policy.simulated.root_sha256: allow_simulated is true but no simulated root is pinned",
                          hint="run 'ratls sim root' and paste its sha256 here")
    sections: dict[str, Any] = {}
    for section in registry.policy_sections():
        reader = top.sub(section.key)
        if reader is not None:
            sections[section.key] = section.parse(reader)
    claims_map = top.sub("claims")
    claims = _parse_claims(claims_map) if claims_map is not None else ClaimsPolicy()
    tofu = top.boolean("trust_on_first_use", False) or False
    top.finish()
    if not platforms and not allow_sim:
        raise PolicyError("policy.platforms: no platform is accepted", hint=f"list e.g. [{accepted[0]}]")
    return Policy(version=version, platforms=platforms, allow_simulated=allow_sim, simulated_roots=roots,
                  claims=claims, source=source, trust_on_first_use=tofu, sections=sections)


def load_policy(path: str | Path) -> Policy:
    p = Path(path)
    data = read_yaml(p, "policy file", error=PolicyError,
                     missing_hint="check the path, or write one with 'ratls policy init'")
    try:
        return parse_policy(data, source=str(p))
    except PolicyError as exc:
        raise PolicyError(f"{p}: {exc.message}", hint=exc.hint) from None
