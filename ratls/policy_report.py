"""What a policy accepts (``ratls policy explain``) and why a certificate passes or fails it
(``ratls policy diff``). Pure functions over Policy, Appraisal and Claims that return
dataclasses; rendering (text and JSON) is separate, and all I/O lives in ``policy_cli``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from .appraisal import Appraisal, Check
from .canonical import canonical_json, config_digest
from .claims import Claims
from .policy import GuestPolicyRules, Policy, SnpPolicy, TdxPolicy

EXPLAIN_SCHEMA = "ratls-policy-explain/1"
DIFF_SCHEMA = "ratls-policy-diff/1"
SNP_PLATFORMS = ("sev-snp", "azure-snp-vtpm")
TDX_PLATFORMS = ("tdx", "azure-tdx-vtpm")
AZURE_PLATFORMS = ("azure-snp-vtpm", "azure-tdx-vtpm")


# ---------------------------------------------------------------- explain

@dataclass(frozen=True)
class Rule:
    """One statement about the policy. ``pinned`` is False when the policy leaves the value open
    (anything the server presents is accepted); ``warning`` marks what weakens it on purpose."""

    topic: str
    text: str
    pinned: bool
    value: Any = None
    warning: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "pinned": self.pinned, "warning": self.warning, "text": self.text,
                "value": self.value}


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


def _hexes(values: list[bytes] | None) -> list[str] | None:
    return None if values is None else [v.hex() for v in values]


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    # days only from two on: "24h" reads as the policy wrote it
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0 and (unit != "d" or seconds >= 2 * size):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _one_of(values: list[str]) -> str:
    return values[0] if len(values) == 1 else "one of " + ", ".join(values)


def _allow_list(topic: str, label: str, values: list[bytes] | None, open_text: str) -> Rule:
    if values is None:
        return Rule(topic, open_text, pinned=False)
    return Rule(topic, f"{label} must be {_one_of([v.hex() for v in values])}", pinned=True, value=_hexes(values))


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


_PERMISSIONS = ("debug", "migrate_ma", "smt", "cxl_allow")  # "true" tolerates; the others "true" requires


def _guest_policy_rules(rules: GuestPolicyRules) -> list[Rule]:
    out: list[Rule] = []
    for attr in ("debug", "migrate_ma", "smt", "single_socket", "cxl_allow", "mem_aes_256_xts",
                 "ciphertext_hiding", "page_swap_disable"):
        want = getattr(rules, attr)
        topic, label = f"sev-snp.guest_policy.{attr}", attr.upper()
        if want is None:
            out.append(Rule(topic, f"guest policy {label} is not checked", pinned=False))
        elif attr in _PERMISSIONS:
            # tolerating DEBUG or a migration agent hands guest memory to someone else: say it loudly
            loud = bool(want) and attr in ("debug", "migrate_ma")
            text = f"guests with {label} set are {'tolerated' if want else 'refused'}"
            if loud:
                text = f"guests with {label} set are ACCEPTED: " + (
                    "the host can read guest memory" if attr == "debug" else "a migration agent can read it")
            out.append(Rule(topic, text, pinned=True, value=want, warning=loud))
        else:
            out.append(Rule(topic, f"guest policy must have {label}={int(want)}", pinned=True, value=want))
    return out


def _min_tcb_rules(snp: SnpPolicy) -> list[Rule]:
    if not snp.min_tcb:
        return [Rule("sev-snp.min_tcb", "no TCB minimum: any REPORTED_TCB is accepted, including firmware with "
                     "known vulnerabilities", pinned=False)]
    return [Rule(f"sev-snp.min_tcb{'' if product == '*' else '.' + product}",
                 "REPORTED_TCB at least " + " ".join(f"{n}={v}" for n, v in minimum.items())
                 + (" (every product)" if product == "*" else f" ({product})"),
                 pinned=True, value=dict(minimum.items()))
            for product, minimum in snp.min_tcb.items()]


def _snp_rules(snp: SnpPolicy) -> list[Rule]:
    rules = [Rule("sev-snp.measurements", "no launch measurement listed: every SEV-SNP guest is refused (fail "
                  "closed)", pinned=True, value=[]) if snp.measurements is None else
             _allow_list("sev-snp.measurements", "the launch measurement", snp.measurements, "")]
    rules += _min_tcb_rules(snp)
    rules += _guest_policy_rules(snp.guest_policy)
    rules.append(Rule("sev-snp.vmpl", "reports requested at any VMPL are accepted", pinned=False)
                 if snp.vmpl is None else Rule("sev-snp.vmpl", f"VMPL must be {_one_of([str(v) for v in snp.vmpl])}",
                                               pinned=True, value=snp.vmpl))
    rules.append(Rule("sev-snp.signing_keys", "reports signed by a VCEK or a VLEK are accepted", pinned=False)
                 if snp.signing_keys is None else
                 Rule("sev-snp.signing_keys", f"reports must be signed by {_one_of(snp.signing_keys)}", pinned=True,
                      value=snp.signing_keys))
    rules.append(Rule("sev-snp.products", "any AMD product line is accepted", pinned=False) if snp.products is None
                 else Rule("sev-snp.products", f"AMD product line must be {_one_of(snp.products)}", pinned=True,
                           value=snp.products))
    rules.append(_allow_list("sev-snp.chip_ids", "CHIP_ID", snp.chip_ids, "no chip allow-list: any genuine chip"))
    rules.append(Rule("sev-snp.host_data", "HOST_DATA is not pinned: any value the host sets at launch",
                      pinned=False) if snp.host_data is None else
                 Rule("sev-snp.host_data", f"HOST_DATA must be {snp.host_data.hex()}", pinned=True,
                      value=snp.host_data.hex()))
    rules.append(_allow_list("sev-snp.id_key_digests", "ID_KEY_DIGEST", snp.id_key_digests,
                             "ID key not pinned: any ID block, or none"))
    rules.append(_allow_list("sev-snp.author_key_digests", "AUTHOR_KEY_DIGEST", snp.author_key_digests,
                             "author key not pinned: any, or none"))
    rules.append(Rule("sev-snp.min_guest_svn", "no minimum GUEST_SVN", pinned=False) if snp.min_guest_svn is None
                 else Rule("sev-snp.min_guest_svn", f"GUEST_SVN at least {snp.min_guest_svn}", pinned=True,
                           value=snp.min_guest_svn))
    fw = None if snp.min_firmware is None else "{}.{}.{}".format(*snp.min_firmware)
    rules.append(Rule("sev-snp.min_firmware", "no minimum firmware version", pinned=False) if fw is None else
                 Rule("sev-snp.min_firmware", f"firmware at least {fw}", pinned=True, value=fw))
    if snp.report_data is not None:
        rules.append(Rule("sev-snp.report_data", f"REPORT_DATA must be {snp.report_data.hex()} (raw evidence only)",
                          pinned=True, value=snp.report_data.hex()))
    return rules


def _tdx_rules(tdx: TdxPolicy) -> list[Rule]:
    rules = [Rule("tdx.mrtd", "no MRTD listed: every TD is refused (fail closed)", pinned=True, value=[])
             if tdx.mrtd is None else _allow_list("tdx.mrtd", "MRTD", tdx.mrtd, "")]
    for i in range(4):
        runtime = " (RTMR3 is usually extended at runtime)" if i == 3 else ""
        rules.append(_allow_list(f"tdx.rtmr.{i}", f"RTMR{i}", tdx.rtmr.get(i), f"RTMR{i} is not pinned{runtime}"))
    for key, label in (("mrconfigid", "MRCONFIGID"), ("mrowner", "MROWNER"), ("mrownerconfig", "MROWNERCONFIG")):
        rules.append(_allow_list(f"tdx.{key}", label, getattr(tdx, key), f"{label} is not pinned: any value"))
    rules.append(_allow_list("tdx.mrseam", "MRSEAM", tdx.mrseam,
                             "MRSEAM not pinned: any TDX module whose TCB status is accepted"))
    rules.append(Rule("tdx.debug", "debuggable TDs are ACCEPTED: the host can read TD memory", pinned=True,
                      value=True, warning=True) if tdx.debug else
                 Rule("tdx.debug", "debuggable TDs are refused", pinned=True, value=False))
    rules.append(Rule("tdx.sept_ve_disable", "SEPT_VE_DISABLE must be set (the default)", pinned=True, value=True)
                 if tdx.sept_ve_disable else
                 Rule("tdx.sept_ve_disable", "SEPT_VE_DISABLE is not required: TDs the host can make take #VE on "
                      "their private pages are accepted", pinned=False, value=False, warning=True))
    stale = [s for s in tdx.accept_tcb_status if s.startswith("OutOfDate")]
    rules.append(Rule("tdx.accept_tcb_status", f"TCB status must be {_one_of(tdx.accept_tcb_status)}"
                      + (": OUT-OF-DATE platforms (known vulnerabilities) are accepted" if stale else ""),
                      pinned=True, value=tdx.accept_tcb_status, warning=bool(stale)))
    rules.append(Rule("tdx.reject_advisories", "no advisory is rejected beyond the TCB status", pinned=False)
                 if not tdx.reject_advisories else
                 Rule("tdx.reject_advisories", "platforms affected by " + ", ".join(tdx.reject_advisories)
                      + " are refused", pinned=True, value=tdx.reject_advisories))
    rules.append(Rule("tdx.min_tcb_eval_data_number", "no minimum TCB evaluation data number: collateral of any "
                      "age is accepted", pinned=False) if tdx.min_tcb_eval_data_number is None else
                 Rule("tdx.min_tcb_eval_data_number", f"TCB evaluation data number at least "
                      f"{tdx.min_tcb_eval_data_number}", pinned=True, value=tdx.min_tcb_eval_data_number))
    if tdx.report_data is not None:
        rules.append(Rule("tdx.report_data", f"REPORTDATA must be {tdx.report_data.hex()} (raw evidence only)",
                          pinned=True, value=tdx.report_data.hex()))
    return rules


def _vtpm_rules(policy: Policy) -> list[Rule]:
    if not policy.vtpm.pcrs:
        return [Rule("vtpm.pcrs", "no PCR pinned: any boot chain and OS under the paravisor", pinned=False)]
    return [_allow_list(f"vtpm.pcrs.{i}", f"PCR{i}", values, "") for i, values in sorted(policy.vtpm.pcrs.items())]


def _claims_rules(policy: Policy) -> list[Rule]:
    cp = policy.claims
    rules: list[Rule] = []
    if cp.models is None:
        rules.append(Rule("claims.models", "models not pinned: the gateway may serve any models", pinned=False))
    else:
        for name, digest in sorted(cp.models.items()):
            if name == "*":
                rules.append(Rule("claims.models.*", f"the whole model repository (manifest) must be exactly "
                                  f"{digest}: no model may be added, removed or changed", pinned=True, value=digest))
            else:
                rules.append(Rule(f"claims.models.{name}", f"model '{name}' must be {digest}", pinned=True,
                                  value=digest))
        if "*" not in cp.models:
            rules.append(Rule("claims.models.*", "models other than those listed are not pinned: the gateway may "
                              "serve more models", pinned=False))
    rules.append(Rule("claims.config", "config not pinned: any gateway configuration is accepted", pinned=False)
                 if cp.config is None else
                 Rule("claims.config", f"the gateway's security configuration must be exactly {cp.config}",
                      pinned=True, value=cp.config))
    rules.append(Rule("claims.max_age", "no max_age: evidence of any age is accepted while the certificate is valid",
                      pinned=False) if cp.max_age is None else
                 Rule("claims.max_age", f"evidence must be at most {_duration(cp.max_age)} old", pinned=True,
                      value=int(cp.max_age.total_seconds())))
    return rules


def _sections(policy: Policy) -> tuple[bool, bool, bool]:
    """Which hardware sections apply: those of the accepted platforms. The simulators produce SNP
    (sim) or TDX (sim-tdx) evidence, so with allow_simulated a section written out applies too."""
    custom_snp, custom_tdx = policy.snp != SnpPolicy(), policy.tdx != TdxPolicy()
    sim = policy.allow_simulated
    snp = any(p in policy.platforms for p in SNP_PLATFORMS) or (sim and (custom_snp or not custom_tdx))
    tdx = any(p in policy.platforms for p in TDX_PLATFORMS) or (sim and custom_tdx)
    azure = any(p in policy.platforms for p in AZURE_PLATFORMS)
    return snp, tdx, azure


def explain_policy(policy: Policy) -> Explanation:
    snp, tdx, azure = _sections(policy)
    rules = _top_rules(policy)
    if snp:
        rules += _snp_rules(policy.snp)
    if tdx:
        rules += _tdx_rules(policy.tdx)
    if azure:
        rules += _vtpm_rules(policy)
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


def diff_models(pinned: dict[str, str] | None, claims: Claims | None) -> ModelDiff | None:
    if pinned is None:
        return None
    served, manifest = attested_models(claims)
    named = {n: d for n, d in pinned.items() if n != "*"}
    changed = {n: (d, served[n]) for n, d in sorted(named.items()) if n in served and served[n] != d}
    removed = {n: d for n, d in sorted(named.items()) if n not in served}
    # Without named pins there is nothing to call "added": every model would be.
    added = {n: d for n, d in sorted(served.items()) if n not in named} if named else {}
    star = pinned.get("*")
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


@dataclass(frozen=True)
class _Spec:
    claim: str
    key: tuple[str | int, ...]
    expected: Callable[[Policy], Any]
    actual: Callable[[Appraisal], Any]
    suggest: bool = False  # an identity pin: accepting the new value is a matter of trusting it


def _ev(key: str) -> Callable[[Appraisal], Any]:
    return lambda a: a.evidence.get(key)


def _meas(key: str) -> Callable[[Appraisal], Any]:
    return lambda a: a.measurements.get(key)


def _hex_or_none(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _iat(a: Appraisal) -> str | None:
    iat = (a.claims or {}).get("iat")
    return "issued " + datetime.fromtimestamp(iat, UTC).isoformat() if isinstance(iat, int) else None


_SPECS: dict[str, _Spec] = {
    "policy.platform": _Spec("platform", ("platforms",),
                             lambda p: {"platforms": p.platforms, "allow_simulated": p.allow_simulated},
                             lambda a: {"platform": a.platform, "simulated": a.simulated}),
    "policy.snp.measurement": _Spec("SEV-SNP launch measurement", ("sev-snp", "measurements"),
                                    lambda p: _hexes(p.snp.measurements), _meas("measurement"), suggest=True),
    "policy.snp.product": _Spec("AMD product line", ("sev-snp", "products"), lambda p: p.snp.products,
                                _ev("product")),
    "policy.snp.min-tcb": _Spec("REPORTED_TCB", ("sev-snp", "min_tcb"),
                                lambda p: {k: dict(v.items()) for k, v in p.snp.min_tcb.items()},
                                _ev("reported_tcb")),
    "policy.snp.vmpl": _Spec("VMPL", ("sev-snp", "vmpl"), lambda p: p.snp.vmpl, _ev("vmpl")),
    "policy.snp.signing-key": _Spec("report signing key", ("sev-snp", "signing_keys"),
                                    lambda p: p.snp.signing_keys, _ev("signing_key")),
    "policy.snp.host-data": _Spec("HOST_DATA", ("sev-snp", "host_data"), lambda p: _hex_or_none(p.snp.host_data),
                                  _ev("host_data"), suggest=True),
    "policy.snp.id-key": _Spec("ID_KEY_DIGEST", ("sev-snp", "id_key_digests"),
                               lambda p: _hexes(p.snp.id_key_digests), _ev("id_key_digest"), suggest=True),
    "policy.snp.author-key": _Spec("AUTHOR_KEY_DIGEST", ("sev-snp", "author_key_digests"),
                                   lambda p: _hexes(p.snp.author_key_digests), _ev("author_key_digest"),
                                   suggest=True),
    "policy.snp.chip-id": _Spec("CHIP_ID", ("sev-snp", "chip_ids"), lambda p: _hexes(p.snp.chip_ids),
                                _ev("chip_id"), suggest=True),
    "policy.snp.guest-svn": _Spec("GUEST_SVN", ("sev-snp", "min_guest_svn"), lambda p: p.snp.min_guest_svn,
                                  _ev("guest_svn")),
    "policy.snp.firmware": _Spec("firmware version", ("sev-snp", "min_firmware"),
                                 lambda p: None if p.snp.min_firmware is None else "{}.{}.{}".format(
                                     *p.snp.min_firmware), _ev("firmware")),
    "policy.snp.report-data": _Spec("REPORT_DATA", ("sev-snp", "report_data"),
                                    lambda p: _hex_or_none(p.snp.report_data), _ev("report_data")),
    "policy.tdx.mrtd": _Spec("MRTD", ("tdx", "mrtd"), lambda p: _hexes(p.tdx.mrtd), _meas("mrtd"), suggest=True),
    "policy.tdx.mrconfigid": _Spec("MRCONFIGID", ("tdx", "mrconfigid"), lambda p: _hexes(p.tdx.mrconfigid),
                                   _meas("mrconfigid"), suggest=True),
    "policy.tdx.mrowner": _Spec("MROWNER", ("tdx", "mrowner"), lambda p: _hexes(p.tdx.mrowner), _meas("mrowner"),
                                suggest=True),
    "policy.tdx.mrownerconfig": _Spec("MROWNERCONFIG", ("tdx", "mrownerconfig"),
                                      lambda p: _hexes(p.tdx.mrownerconfig), _meas("mrownerconfig"), suggest=True),
    "policy.tdx.mrseam": _Spec("MRSEAM (TDX module)", ("tdx", "mrseam"), lambda p: _hexes(p.tdx.mrseam),
                               _meas("mrseam"), suggest=True),
    "policy.tdx.debug": _Spec("TD debug attribute", ("tdx", "debug"), lambda p: p.tdx.debug, _ev("debug")),
    "policy.tdx.sept-ve-disable": _Spec("SEPT_VE_DISABLE", ("tdx", "sept_ve_disable"),
                                        lambda p: p.tdx.sept_ve_disable, _ev("sept_ve_disable")),
    "policy.tdx.report-data": _Spec("REPORTDATA", ("tdx", "report_data"), lambda p: _hex_or_none(p.tdx.report_data),
                                    _ev("report_data")),
    "policy.tdx.tcb-status": _Spec("TDX TCB status", ("tdx", "accept_tcb_status"),
                                   lambda p: p.tdx.accept_tcb_status, lambda a: a.tcb.get("status")),
    "policy.tdx.advisories": _Spec("Intel security advisories", ("tdx", "reject_advisories"),
                                   lambda p: p.tdx.reject_advisories, lambda a: a.tcb.get("advisory_ids")),
    "policy.tdx.tcb-eval-number": _Spec("TCB evaluation data number", ("tdx", "min_tcb_eval_data_number"),
                                        lambda p: p.tdx.min_tcb_eval_data_number,
                                        lambda a: a.tcb.get("tcb_eval_data_number")),
    "policy.claims.max-age": _Spec("evidence age", ("claims", "max_age"),
                                   lambda p: None if p.claims.max_age is None else _duration(p.claims.max_age), _iat),
}


def _spec(check: str) -> _Spec | None:
    if check in _SPECS:
        return _SPECS[check]
    head, _, tail = check.rpartition(".")
    if head == "policy.snp.guest-policy":
        return _Spec(f"guest policy {tail.upper()}", ("sev-snp", "guest_policy", tail),
                     lambda p: getattr(p.snp.guest_policy, tail, None),
                     lambda a: (a.evidence.get("policy") or {}).get(tail))
    index = tail.removeprefix("rtmr").removeprefix("pcr")
    if head == "policy.tdx" and tail.startswith("rtmr") and index.isdigit():
        i = int(index)
        return _Spec(f"RTMR{i}", ("tdx", "rtmr", i), lambda p: _hexes(p.tdx.rtmr.get(i)), _meas(f"rtmr{i}"),
                     suggest=True)
    if head == "policy.vtpm" and tail.startswith("pcr") and index.isdigit():
        i = int(index)
        return _Spec(f"PCR{i}", ("vtpm", "pcrs", i), lambda p: _hexes(p.vtpm.pcrs.get(i)), _meas(f"pcr{i}"),
                     suggest=True)
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
        if "*" in (policy.claims.models or {}) and manifest is not None:
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
