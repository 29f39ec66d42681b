"""What a policy accepts (``ratls policy explain``) and why a certificate passes or fails it
(``ratls policy diff``). Pure functions over Policy, Appraisal and Claims that return
dataclasses; rendering (text and JSON) is separate, and all I/O lives in ``policy_cli``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from . import registry
from .appraisal import Appraisal, Check
from .canonical import canonical_json, config_digest
from .claims import Claims
from .policy import ALL, Every, Policy, PolicySection, pinned_models
from .policy_rules import CheckSpec, Rule, duration_text

EXPLAIN_SCHEMA = "ratls-policy-explain/1"
DIFF_SCHEMA = "ratls-policy-diff/1"


# ---------------------------------------------------------------- explain

@dataclass(frozen=True)
class Explanation:
    source: str
    rules: list[Rule]

    @property
    def warnings(self) -> list[Rule]:
        return [r for r in self.rules if r.warning]

    def to_json(self) -> dict[str, Any]:
        return {"schema": EXPLAIN_SCHEMA, "policy": self.source, "rules": [r.to_json() for r in self.rules],
                "pinned": [r.topic for r in self.rules if r.pinned],
                "not_pinned": [r.topic for r in self.rules if not r.pinned],
                "warnings": [r.topic for r in self.warnings]}


def _top_rules(policy: Policy) -> list[Rule]:
    none = "accepts no hardware platform" + (": simulated evidence only" if policy.allow_simulated else "")
    rules = [Rule("platforms", ("accepts hardware platforms: " + ", ".join(policy.platforms)) if policy.platforms
                  else none, pinned=True, value=list(policy.platforms))]
    if policy.allow_simulated:
        rules.append(Rule("allow_simulated", "SIMULATED EVIDENCE IS ACCEPTED (allow_simulated: true): it proves "
                          "nothing about hardware; use this policy for testing only. Pinned simulated root(s): "
                          + ", ".join(policy.simulated_roots), pinned=True, value=list(policy.simulated_roots),
                          warning=True))
    else:
        rules.append(Rule("allow_simulated", "simulated evidence is refused", pinned=True, value=False))
    if policy.trust_on_first_use:
        rules.append(Rule("trust_on_first_use", "trust on first use: the values were copied from what a server "
                          "presented, not computed independently; review them, then remove trust_on_first_use",
                          pinned=True, value=True, warning=True))
    return rules


def _claims_rules(policy: Policy) -> list[Rule]:
    cp = policy.claims
    rules: list[Rule] = []
    if cp.models is None:
        rules.append(Rule("claims.models", "models not pinned: the gateway may serve any models", pinned=False))
    else:
        for key, name, digest in pinned_models(cp.models):
            if key is ALL:
                rules.append(Rule("claims.models.*", f"the whole model repository (manifest) must be exactly "
                                  f"{digest}: no model may be added, removed or changed", pinned=True, value=digest))
            else:
                rules.append(Rule(f"claims.models.{name}", f"model '{name}' must be {digest}", pinned=True,
                                  value=digest))
        if ALL not in cp.models:
            rules.append(Rule("claims.models.*", "models other than those listed are not pinned: the gateway may "
                              "serve more models", pinned=False))
    rules.append(Rule("claims.config", "config not pinned: any gateway configuration is accepted", pinned=False)
                 if cp.config is None else
                 Rule("claims.config", f"the gateway's security configuration must be exactly {cp.config}",
                      pinned=True, value=cp.config))
    rules.append(Rule("claims.max_age", "no max_age: evidence of any age is accepted while the certificate is valid",
                      pinned=False) if cp.max_age is None else
                 Rule("claims.max_age", f"evidence must be at most {duration_text(cp.max_age)} old", pinned=True,
                      value=int(cp.max_age.total_seconds())))
    return rules


def _sections(policy: Policy) -> list[PolicySection[Any]]:
    """Which platform sections apply: those of the accepted platforms. With allow_simulated, a
    section a simulator is appraised with applies too when written out (the first such section
    when none is: the default simulator's)."""
    sections = registry.policy_sections()
    simulated = [s for s in sections if any(t.simulated for t in registry.using(s))]
    written = [s for s in simulated if policy.section(s) != s.default]
    shown_simulated = (written or simulated[:1]) if policy.allow_simulated else []
    # device sections (GPUs) apply to every platform, and are explained when written
    devices = {s.key for d in registry.device_types() for s in d.policy_sections}
    return [s for s in sections
            if s in shown_simulated or any(t.name in policy.platforms for t in registry.using(s) if not t.simulated)
            or (s.key in devices and s.key in policy.sections)]


def explain_policy(policy: Policy) -> Explanation:
    rules = _top_rules(policy)
    for section in _sections(policy):
        if section.explain is not None:
            rules += section.explain(policy.section(section))
    rules += _claims_rules(policy)
    return Explanation(policy.source, rules)


def render_explanation(explanation: Explanation) -> str:
    lines = [f"policy {explanation.source}"]
    lines += [f"!! {r.topic}: {r.text}" for r in explanation.warnings]
    lines.append("accepts only (pinned):")
    lines += [f"  {r.topic}: {r.text}" for r in explanation.rules if r.pinned and not r.warning]
    lines.append("not pinned (whatever the server presents is accepted):")
    lines += [f"  {r.topic}: {r.text}" for r in explanation.rules if not r.pinned] or ["  (nothing)"]
    return "\n".join(lines)


# ---------------------------------------------------------------- config documents

def config_body(document: Any) -> Any:
    """The security config itself: the gateway serves it wrapped as {"digest": ..., "config": ...}."""
    if isinstance(document, dict) and set(document) == {"digest", "config"}:
        return document["config"]
    return document


@dataclass(frozen=True)
class ConfigChange:
    path: str  # dotted, e.g. listen.tls_min_version
    kind: str  # changed | added | removed
    old: Any = None
    new: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "old": self.old, "new": self.new}


def dotted_changes(old: Any, new: Any, prefix: str = "") -> list[ConfigChange]:
    """Leaf-level differences between two JSON documents; lists are compared as whole values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[ConfigChange] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in new:
                out.append(ConfigChange(path, "removed", old=old[key]))
            elif key not in old:
                out.append(ConfigChange(path, "added", new=new[key]))
            else:
                out += dotted_changes(old[key], new[key], path)
        return out
    # canonical JSON, not ==: in Python 1 == True and 1 == 1.0, in a config they are different values
    if canonical_json(old) == canonical_json(new):
        return []
    return [ConfigChange(prefix or "(document)", "changed", old=old, new=new)]


@dataclass(frozen=True)
class ConfigSources:
    """What the CLI could gather for the config diff: the document the live server serves (or why
    there is none) and the document the policy was made from."""

    served: Any = None
    served_error: str | None = None
    was: Any = None
    was_source: str | None = None


@dataclass(frozen=True)
class ConfigDiff:
    pinned: str
    claimed: str | None
    status: str  # unchanged | no-claim | unavailable | untrusted | changed
    notes: list[str] = field(default_factory=list)
    changes: list[ConfigChange] = field(default_factory=list)
    served_digest: str | None = None
    was_source: str | None = None
    document: Any = None  # the served document, only once its digest equals the claim

    @property
    def ok(self) -> bool:
        return self.status == "unchanged"

    def to_json(self) -> dict[str, Any]:
        return {"pinned": self.pinned, "claimed": self.claimed, "status": self.status, "notes": self.notes,
                "served_digest": self.served_digest, "was": self.was_source,
                "changes": [c.to_json() for c in self.changes], "document": self.document}


def wants_config_document(policy: Policy, claims: Claims | None) -> bool:
    """Only a config claim that differs from the pinned one needs the document to be explained."""
    pinned = policy.claims.config
    return pinned is not None and claims is not None and claims.config is not None and claims.config != pinned


def diff_config(pinned: str | None, claimed: str | None, sources: ConfigSources,
                *, passes: bool) -> ConfigDiff | None:
    if pinned is None:
        return None
    if claimed == pinned:
        return ConfigDiff(pinned, claimed, "unchanged")
    if claimed is None:
        return ConfigDiff(pinned, None, "no-claim", ["the certificate carries no config claim: this gateway does "
                                                     "not attest its configuration"])
    if sources.served is None:
        return ConfigDiff(pinned, claimed, "unavailable", [
            "the changed keys cannot be shown: " + (sources.served_error or "no config document")])
    body = config_body(sources.served)
    served = config_digest(body)
    if served != claimed:
        return ConfigDiff(pinned, claimed, "untrusted", [
            f"REFUSED: the document served at /.well-known/ratls/config has digest {served}, not the certificate's "
            f"config claim {claimed}: it is not the attested configuration, so it is not diffed"], served_digest=served)
    notes = []
    if not passes:
        notes.append("diagnosis only (the target fails the policy): this document, fetched over TLS pinned to the "
                     "presented certificate, is believed only because its digest equals the certificate's config claim")
    if sources.was is None:
        notes.append("no saved config document to compare with: pass --config-was FILE (the JSON the policy was "
                     "made from)")
        return ConfigDiff(pinned, claimed, "changed", notes, served_digest=served, document=body)
    was_body = config_body(sources.was)
    was_digest = config_digest(was_body)
    if was_digest != pinned:
        notes.append(f"the saved document {sources.was_source} has digest {was_digest}, not the pinned {pinned}: "
                     "the changes below are relative to that document, not to the pinned configuration")
    return ConfigDiff(pinned, claimed, "changed", notes, dotted_changes(was_body, body), served_digest=served,
                      was_source=sources.was_source, document=body)


# ---------------------------------------------------------------- models

@dataclass(frozen=True)
class ModelDiff:
    added: dict[str, str] = field(default_factory=dict)  # attested, not named by the policy
    removed: dict[str, str] = field(default_factory=dict)  # named by the policy, not attested
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (policy, certificate)
    manifest: tuple[str, str | None] | None = None  # the '*' pin and the attested manifest, when they differ
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.removed or self.changed or self.manifest)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "added": self.added, "removed": self.removed,
                "changed": {n: {"old": o, "new": w} for n, (o, w) in self.changed.items()},
                "manifest": None if self.manifest is None else {"old": self.manifest[0], "new": self.manifest[1]},
                "notes": self.notes}


def attested_models(claims: Claims | None) -> tuple[dict[str, str], str | None]:
    models = (claims.models if claims else None) or {}
    served = models.get("models") or {}
    return {str(k): str(v) for k, v in served.items()}, models.get("manifest")


def diff_models(pinned: dict[str | Every, str] | None, claims: Claims | None) -> ModelDiff | None:
    if pinned is None:
        return None
    served, manifest = attested_models(claims)
    named = {n: d for n, d in pinned.items() if isinstance(n, str)}
    changed = {n: (d, served[n]) for n, d in sorted(named.items()) if n in served and served[n] != d}
    removed = {n: d for n, d in sorted(named.items()) if n not in served}
    # Without named pins there is nothing to call "added": every model would be.
    added = {n: d for n, d in sorted(served.items()) if n not in named} if named else {}
    star = pinned.get(ALL)
    manifest_change = (star, manifest) if star is not None and star != manifest else None
    notes = []
    if star is None and added:
        notes.append("models the policy does not name are accepted (no '*' manifest pin): "
                     + ", ".join(sorted(added)))
    if star is not None and not named and manifest_change:
        notes.append("the policy pins only the whole manifest, so it names no models to compare with; "
                     "GET /.well-known/ratls/manifest lists what the gateway serves now")
    return ModelDiff(added, removed, changed, manifest_change, notes)


# ---------------------------------------------------------------- field differences

@dataclass(frozen=True)
class FieldDiff:
    check: str
    claim: str  # what is compared, in words
    policy_key: str  # where the policy says it
    expected: Any  # what the policy accepts
    actual: Any  # what the certificate's evidence carries (None: see detail)
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "claim": self.claim, "policy_key": self.policy_key, "expected": self.expected,
                "actual": self.actual, "detail": self.detail}


def _iat(a: Appraisal) -> str | None:
    iat = (a.claims or {}).get("iat")
    return "issued " + datetime.fromtimestamp(iat, UTC).isoformat() if isinstance(iat, int) else None


_SPECS: dict[str, CheckSpec] = {
    "policy.platform": CheckSpec("platform", ("platforms",),
                                 lambda p: {"platforms": p.platforms, "allow_simulated": p.allow_simulated},
                                 lambda a: {"platform": a.platform, "simulated": a.simulated}),
    "policy.claims.max-age": CheckSpec("evidence age", ("claims", "max_age"),
                                       lambda p: None if p.claims.max_age is None else duration_text(p.claims.max_age),
                                       _iat),
}


def _spec(check: str) -> CheckSpec | None:
    if check in _SPECS:
        return _SPECS[check]
    for section in registry.policy_sections():
        spec = section.check_spec(check) if section.check_spec is not None else None
        if spec is not None:
            return spec
    return None


def field_diff(check: Check, policy: Policy, appraisal: Appraisal) -> FieldDiff:
    spec = _spec(check.name)
    if spec is None:  # a check this report does not know yet: its own words are the explanation
        return FieldDiff(check.name, check.name, "", None, None, check.detail)
    return FieldDiff(check.name, spec.claim, ".".join(str(k) for k in spec.key), spec.expected(policy),
                     spec.actual(appraisal), check.detail)


def evidence_verified(appraisal: Appraisal) -> bool:
    """Every check that is not a policy comparison passed: signatures, chain, bindings, validity."""
    return bool(appraisal.checks) and all(c.ok for c in appraisal.checks if not c.name.startswith("policy."))


# ---------------------------------------------------------------- the diff

@dataclass(frozen=True)
class PolicyDiff:
    target: str
    policy: str
    ok: bool
    evidence_ok: bool
    simulated: bool
    verification_failures: list[Check]
    fields: list[FieldDiff]
    models: ModelDiff | None
    config: ConfigDiff | None
    suggestion: dict[str, Any]  # a policy fragment that accepts the new values
    not_suggested: list[str]
    appraisal: Appraisal

    def to_json(self) -> dict[str, Any]:
        return {"schema": DIFF_SCHEMA, "target": self.target, "policy": self.policy,
                "verdict": "pass" if self.ok else "fail", "evidence_verified": self.evidence_ok,
                "simulated": self.simulated,
                "verification_failures": [c.to_json() for c in self.verification_failures],
                "differences": [f.to_json() for f in self.fields],
                "models": None if self.models is None else self.models.to_json(),
                "config": None if self.config is None else self.config.to_json(),
                "suggestion": self.suggestion or None, "suggestion_yaml": suggestion_yaml(self.suggestion) or None,
                "not_suggested": self.not_suggested, "appraisal": self.appraisal.to_json()}


def _covered(name: str) -> bool:
    # model and config checks get their own, richer sections
    return name.startswith("policy.claims.model.") or name == "policy.claims.config"


def _put(fragment: dict[Any, Any], key: tuple[str | int, ...], value: Any) -> None:
    for part in key[:-1]:
        fragment = fragment.setdefault(part, {})
    fragment[key[-1]] = value


def _suggest(policy: Policy, fields: list[FieldDiff], claims: Claims | None, models: ModelDiff | None,
             config: ConfigDiff | None, evidence_ok: bool) -> tuple[dict[str, Any], list[str]]:
    if not evidence_ok:
        return {}, ["nothing: the evidence failed verification, and no policy line makes unauthenticated evidence "
                    "trustworthy"]
    fragment: dict[str, Any] = {}
    skipped: list[str] = []
    for f in fields:
        spec = _spec(f.check)
        if spec is None or not spec.suggest or f.actual is None:
            why = ("the gateway should present newer evidence (renew its certificate)" if f.check ==
                   "policy.claims.max-age" else "relaxing a security requirement is a decision to make by hand, "
                   "not from a diff")
            skipped.append(f"{f.policy_key or f.check}: {why}")
            continue
        # allow-lists keep the values they had (instances not yet upgraded still need them)
        single = spec.key[-1] == "host_data"
        _put(fragment, spec.key, f.actual if single else [*(f.expected or []), f.actual])
    if models is not None and not models.ok:
        served, manifest = attested_models(claims)
        block: dict[str, str] = dict(served)
        if ALL in (policy.claims.models or {}) and manifest is not None:
            block["*"] = manifest
        _put(fragment, ("claims", "models"), block)
    if config is not None and not config.ok and config.claimed is not None:
        if config.status == "untrusted":
            skipped.append("claims.config: the served document does not match the attested digest; find out what "
                           "the gateway runs before pinning a new one")
        else:
            _put(fragment, ("claims", "config"), config.claimed)
    return fragment, skipped


def diff_policy(policy: Policy, appraisal: Appraisal, claims: Claims | None, *, target: str,
                config: ConfigSources | None = None) -> PolicyDiff:
    failures = appraisal.failures
    evidence_ok = evidence_verified(appraisal)
    fields = [field_diff(c, policy, appraisal) for c in failures if c.name.startswith("policy.") and not
              _covered(c.name)]
    models = diff_models(policy.claims.models, claims) if claims is not None else None
    config_diff = (diff_config(policy.claims.config, claims.config, config or ConfigSources(), passes=appraisal.ok)
                   if claims is not None else None)
    suggestion, skipped = ({}, []) if appraisal.ok else _suggest(policy, fields, claims, models, config_diff,
                                                                  evidence_ok)
    return PolicyDiff(target, policy.source, appraisal.ok, evidence_ok, appraisal.simulated,
                      [c for c in failures if not c.name.startswith("policy.")], fields, models, config_diff,
                      suggestion, skipped, appraisal)


# ---------------------------------------------------------------- rendering

def suggestion_yaml(fragment: dict[str, Any]) -> str:
    return yaml.safe_dump(fragment, sort_keys=False, default_flow_style=False) if fragment else ""


def _v(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value)


def _render_models(m: ModelDiff) -> list[str]:
    lines = ["models (claims.models): " + ("as pinned" if m.ok else "DIFFER")]
    lines += [f"  added:   {n} {d}" for n, d in m.added.items()]
    lines += [f"  removed: {n} (pinned {d}, no longer attested)" for n, d in m.removed.items()]
    lines += [f"  changed: {n} {old} -> {new}" for n, (old, new) in m.changed.items()]
    if m.manifest is not None:
        lines.append(f"  manifest ('*'): {m.manifest[0]} -> {m.manifest[1] or '(not attested)'}")
    lines += [f"  note: {n}" for n in m.notes]
    return lines


def _render_config(c: ConfigDiff) -> list[str]:
    if c.ok:
        return [f"config (claims.config): as pinned ({c.pinned})"]
    lines = [f"config (claims.config): {c.pinned} -> {c.claimed or '(not attested)'}"]
    lines += [f"  note: {n}" for n in c.notes]
    if c.status == "changed" and c.was_source is not None:
        lines.append(f"  changed keys (vs {c.was_source}):" if c.changes else
                     f"  no key differs from {c.was_source}")
        lines += [f"    {ch.path}: {_v(ch.old)} -> {_v(ch.new)}" for ch in c.changes]
    return lines


def render_diff(d: PolicyDiff) -> str:
    head = f"{d.target}: {'PASSES' if d.ok else 'FAILS'} policy {d.policy}"
    if d.simulated:
        head += "  [SIMULATED platform - not hardware evidence]"
    lines = [head]
    if d.evidence_ok:
        lines.append("evidence: verified (signatures, certificate chain, key and claims binding, validity)")
    else:
        lines.append("evidence: FAILED verification - not a policy difference, no policy change fixes it:")
        lines += [f"  {c.name}: {c.detail}" for c in d.verification_failures]
    for f in d.fields:
        lines.append(f"{f.policy_key or f.check} ({f.claim}): {f.detail}")
        if f.policy_key:
            lines.append(f"  policy:      {_v(f.expected)}")
            lines.append(f"  certificate: {_v(f.actual) if f.actual is not None else '(see above)'}")
    if d.models is not None:
        lines += _render_models(d.models)
    if d.config is not None:
        lines += _render_config(d.config)
    if d.suggestion:
        lines.append(f"if you trust this change, these 'ratls policy' lines accept it (replace the same keys in "
                     f"{d.policy}):")
        lines += ["  " + line for line in suggestion_yaml(d.suggestion).splitlines()]
    lines += [f"not suggested: {s}" for s in d.not_suggested]
    return "\n".join(lines)
