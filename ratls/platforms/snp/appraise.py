"""SEV-SNP policy appraisal of an already verified report. Pure: no I/O, no crypto."""

from __future__ import annotations

from ...appraisal import Check, allow_listed, failed, passed
from .abi import SnpReport
from .policy import GUEST_POLICY_BITS, PERMISSIONS, SnpPolicy
from .verify import VerifiedSnp


def _launch_checks(verified: VerifiedSnp, policy: SnpPolicy) -> list[Check]:
    """Measurement, product line and TCB minimum: what was launched, on which firmware."""
    report, product = verified.report, verified.product
    checks: list[Check] = []
    if policy.measurements is None:
        checks.append(failed("policy.snp.measurement", "the policy lists no accepted measurements "
                                                       "(sev-snp.measurements); refusing to accept any launch digest"))
    else:
        checks += allow_listed("policy.snp.measurement", report.measurement, policy.measurements, "measurement")

    if policy.products is not None:
        if product is None or product in policy.products:
            checks.append(passed("policy.snp.product", f"product {product or 'unknown (v2 report)'} accepted"))
        else:
            checks.append(failed("policy.snp.product", f"product {product} is not in "
                                                       f"{[p.value for p in policy.products]}"))

    minimum = policy.min_tcb_for(product)
    if minimum is not None:
        have = report.reported_tcb.components()
        low = [f"{n} {have.get(n)} < {v}" for n, v in minimum.items() if n in have and have[n] < v]
        if low:
            checks.append(failed("policy.snp.min-tcb", "REPORTED_TCB below the minimum: " + ", ".join(low)))
        else:
            checks.append(passed("policy.snp.min-tcb", f"REPORTED_TCB {report.reported_tcb} meets the minimum"))
    return checks


def _guest_policy_checks(report: SnpReport, policy: SnpPolicy) -> list[Check]:
    checks: list[Check] = []
    rules = policy.guest_policy
    gp = report.policy
    for attr in GUEST_POLICY_BITS:
        want, label = getattr(rules, attr), attr.upper()
        if want is None:
            continue
        have_bit = getattr(gp, attr)
        permission = attr in PERMISSIONS
        ok = (have_bit == want) if not permission else (want or not have_bit)
        name = f"policy.snp.guest-policy.{attr}"
        if ok:
            checks.append(passed(name, f"guest policy {label}={int(have_bit)}"))
        else:
            verb = "allows" if have_bit else "does not set"
            checks.append(failed(name, f"guest policy {verb} {label} (policy 0x{gp.raw:x}); the policy requires "
                                       f"{label}={'1' if want else '0'}"))

    return checks


def _identity_checks(report: SnpReport, policy: SnpPolicy) -> list[Check]:
    """VMPL, signing key, host data, ID/author keys, chip, SVN, firmware and report data pins."""
    checks: list[Check] = []
    if policy.vmpl is not None:
        if report.vmpl in policy.vmpl:
            checks.append(passed("policy.snp.vmpl", f"VMPL {report.vmpl} accepted"))
        else:
            checks.append(failed("policy.snp.vmpl", f"report was requested at VMPL {report.vmpl}, policy accepts "
                                                    f"{policy.vmpl}"))
    if policy.signing_keys is not None:
        kind = report.signer_info.signing_key
        ok = kind in policy.signing_keys
        checks.append((passed if ok else failed)("policy.snp.signing-key",
                                                 f"signed by {kind.value.upper()}; accepted: "
                                                 f"{[k.value for k in policy.signing_keys]}"))
    if policy.host_data is not None:
        ok = report.host_data == policy.host_data
        checks.append((passed if ok else failed)("policy.snp.host-data",
                                                 f"HOST_DATA {report.host_data.hex()}" + ("" if ok else
                                                 f" differs from {policy.host_data.hex()}")))
    checks += allow_listed("policy.snp.id-key", report.id_key_digest, policy.id_key_digests, "ID_KEY_DIGEST")
    if policy.author_key_digests is not None:
        if not report.signer_info.author_key_en:
            checks.append(failed("policy.snp.author-key", "policy pins author keys but the report has no "
                                                          "AUTHOR_KEY_EN"))
        else:
            checks += allow_listed("policy.snp.author-key", report.author_key_digest, policy.author_key_digests,
                               "AUTHOR_KEY_DIGEST")
    checks += allow_listed("policy.snp.chip-id", report.chip_id, policy.chip_ids, "CHIP_ID")
    if policy.min_guest_svn is not None:
        ok = report.guest_svn >= policy.min_guest_svn
        checks.append((passed if ok else failed)("policy.snp.guest-svn",
                                                 f"GUEST_SVN {report.guest_svn} (minimum {policy.min_guest_svn})"))
    if policy.min_firmware is not None:
        ok = report.current_version >= policy.min_firmware
        have = "{}.{}.{}".format(*report.current_version)
        want = "{}.{}.{}".format(*policy.min_firmware)
        checks.append((passed if ok else failed)("policy.snp.firmware", f"firmware {have} (minimum {want})"))
    if policy.report_data is not None:
        ok = report.report_data == policy.report_data
        checks.append((passed if ok else failed)("policy.snp.report-data",
                                                 "REPORT_DATA " + ("matches" if ok else "differs from")
                                                 + " the expected value"))
    return checks


def appraise_snp(verified: VerifiedSnp, policy: SnpPolicy) -> list[Check]:
    """The product line is the one verification established (from the VCEK for v2 reports)."""
    return [*_launch_checks(verified, policy), *_guest_policy_checks(verified.report, policy),
            *_identity_checks(verified.report, policy)]
