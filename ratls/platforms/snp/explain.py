"""How the ``sev-snp`` policy section explains itself and where its checks' values live."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...appraisal import Appraisal
from ...policy import ALL, Policy
from ...policy_rules import (
    CheckSpec,
    Rule,
    allow_list,
    evidence_field,
    hex_or_none,
    hexes,
    measurement,
    one_of,
)
from .policy import GUEST_POLICY_BITS, PERMISSIONS, GuestPolicyRules, SnpPolicy


def _guest_policy_rules(rules: GuestPolicyRules) -> list[Rule]:
    out: list[Rule] = []
    for attr in GUEST_POLICY_BITS:
        want = getattr(rules, attr)
        topic, label = f"sev-snp.guest_policy.{attr}", attr.upper()
        if want is None:
            out.append(Rule(topic, f"guest policy {label} is not checked", pinned=False))
        elif attr in PERMISSIONS:
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
    return [Rule(f"sev-snp.min_tcb{'' if product is ALL else '.' + product.value}",
                 "REPORTED_TCB at least " + " ".join(f"{n}={v}" for n, v in minimum.items())
                 + (" (every product)" if product is ALL else f" ({product.value})"),
                 pinned=True, value=dict(minimum.items()))
            for product, minimum in snp.min_tcb.items()]


def explain_snp(snp: SnpPolicy) -> list[Rule]:
    rules = [Rule("sev-snp.measurements", "no launch measurement listed: every SEV-SNP guest is refused (fail "
                  "closed)", pinned=True, value=[]) if snp.measurements is None else
             allow_list("sev-snp.measurements", "the launch measurement", snp.measurements, "")]
    rules += _min_tcb_rules(snp)
    rules += _guest_policy_rules(snp.guest_policy)
    rules.append(Rule("sev-snp.vmpl", "reports requested at any VMPL are accepted", pinned=False)
                 if snp.vmpl is None else Rule("sev-snp.vmpl", f"VMPL must be {one_of([str(v) for v in snp.vmpl])}",
                                               pinned=True, value=snp.vmpl))
    rules.append(Rule("sev-snp.signing_keys", "reports signed by a VCEK or a VLEK are accepted", pinned=False)
                 if snp.signing_keys is None else
                 Rule("sev-snp.signing_keys", f"reports must be signed by {one_of(snp.signing_keys)}", pinned=True,
                      value=snp.signing_keys))
    rules.append(Rule("sev-snp.products", "any AMD product line is accepted", pinned=False) if snp.products is None
                 else Rule("sev-snp.products", f"AMD product line must be {one_of(snp.products)}", pinned=True,
                           value=snp.products))
    rules.append(allow_list("sev-snp.chip_ids", "CHIP_ID", snp.chip_ids, "no chip allow-list: any genuine chip"))
    rules.append(Rule("sev-snp.host_data", "HOST_DATA is not pinned: any value the host sets at launch",
                      pinned=False) if snp.host_data is None else
                 Rule("sev-snp.host_data", f"HOST_DATA must be {snp.host_data.hex()}", pinned=True,
                      value=snp.host_data.hex()))
    rules.append(allow_list("sev-snp.id_key_digests", "ID_KEY_DIGEST", snp.id_key_digests,
                             "ID key not pinned: any ID block, or none"))
    rules.append(allow_list("sev-snp.author_key_digests", "AUTHOR_KEY_DIGEST", snp.author_key_digests,
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




def _section() -> Any:
    from .section import SNP_POLICY  # the section names this module's explainers: imported when first used
    return SNP_POLICY


def own(read: Callable[[Any], Any]) -> Callable[[Policy], Any]:
    """A reader of this section's value in a policy."""
    return lambda p: read(_section().of(p))


_SPECS: dict[str, CheckSpec] = {
    "policy.snp.measurement": CheckSpec("SEV-SNP launch measurement", ("sev-snp", "measurements"),
                                own(lambda s: hexes(s.measurements)), measurement("measurement"), suggest=True),
    "policy.snp.product": CheckSpec("AMD product line", ("sev-snp", "products"), own(lambda s: s.products),
                            evidence_field("product")),
    "policy.snp.min-tcb": CheckSpec("REPORTED_TCB", ("sev-snp", "min_tcb"),
                            own(lambda s: {k.value: dict(v.items()) for k, v in s.min_tcb.items()}),
                            evidence_field("reported_tcb")),
    "policy.snp.vmpl": CheckSpec("VMPL", ("sev-snp", "vmpl"), own(lambda s: s.vmpl), evidence_field("vmpl")),
    "policy.snp.signing-key": CheckSpec("report signing key", ("sev-snp", "signing_keys"),
                                own(lambda s: s.signing_keys), evidence_field("signing_key")),
    "policy.snp.host-data": CheckSpec("HOST_DATA", ("sev-snp", "host_data"), own(lambda s: hex_or_none(s.host_data)),
                              evidence_field("host_data"), suggest=True),
    "policy.snp.id-key": CheckSpec("ID_KEY_DIGEST", ("sev-snp", "id_key_digests"),
                           own(lambda s: hexes(s.id_key_digests)), evidence_field("id_key_digest"), suggest=True),
    "policy.snp.author-key": CheckSpec("AUTHOR_KEY_DIGEST", ("sev-snp", "author_key_digests"),
                               own(lambda s: hexes(s.author_key_digests)), evidence_field("author_key_digest"),
                               suggest=True),
    "policy.snp.chip-id": CheckSpec("CHIP_ID", ("sev-snp", "chip_ids"), own(lambda s: hexes(s.chip_ids)),
                            evidence_field("chip_id"), suggest=True),
    "policy.snp.guest-svn": CheckSpec("GUEST_SVN", ("sev-snp", "min_guest_svn"), own(lambda s: s.min_guest_svn),
                              evidence_field("guest_svn")),
    "policy.snp.firmware": CheckSpec("firmware version", ("sev-snp", "min_firmware"),
                             own(lambda s: None if s.min_firmware is None else "{}.{}.{}".format(*s.min_firmware)),
                             evidence_field("firmware")),
    "policy.snp.report-data": CheckSpec("REPORT_DATA", ("sev-snp", "report_data"),
                                own(lambda s: hex_or_none(s.report_data)), evidence_field("report_data")),
}


def snp_check_spec(check: str) -> CheckSpec | None:
    if check in _SPECS:
        return _SPECS[check]
    head, _, tail = check.rpartition(".")
    if head == "policy.snp.guest-policy":
        return CheckSpec(f"guest policy {tail.upper()}", ("sev-snp", "guest_policy", tail),
                         lambda p: getattr(_section().of(p).guest_policy, tail, None),
                         lambda a: (a.evidence.get("policy") or {}).get(tail))
    return None


def observed_snp(appraisal: Appraisal) -> dict[str, Any]:
    """A starting ``sev-snp`` section from what a server presented (``ratls policy init``)."""
    ev = appraisal.evidence
    return {
        "measurements": [appraisal.measurements["measurement"]],
        "min_tcb": dict(ev.get("reported_tcb", {})),
        # never copied: a guest the host can debug or migrate is refused, not pinned
        "guest_policy": {"debug": False, "migrate_ma": False},
        "vmpl": ev.get("vmpl", 0),
        "signing_keys": [ev.get("signing_key", "vcek")],
    }
