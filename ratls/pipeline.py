"""The generic RA-TLS verification pipeline (DESIGN.md §3), platform-neutral:

parse -> pubkey-hash equals the served key -> recompute report_data -> verify the hardware
evidence to a vendor root -> appraise against policy -> Appraisal. Fail closed: anything
that cannot be established is a failed check, and the verdict is pass only if every
check passed.
"""

from __future__ import annotations

import hmac
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from cryptography import x509

from . import registry
from .appraisal import Appraisal, Check, failed, passed
from .cert import RatlsCertificate, load_x509, parse_ratls, spki_der
from .claims import Claims, report_data_for, spki_sha256
from .device_verify import verify_devices
from .errors import EvidenceError, UnreadableEvidence, UsageError
from .evidence import Evidence, VerifiedEvidence
from .policy import ALL, Policy, pinned_models
from .trust import Trust

CLOCK_SKEW = timedelta(minutes=5)


def trust_for(policy: Policy | None, base: Trust | None = None) -> Trust:
    base = base or Trust()
    if policy is None:
        return base
    return replace(base, simulated_roots=tuple(sorted(set(base.simulated_roots) | set(policy.simulated_roots))))


def _platform_accepted(platform: registry.Platform, policy: Policy) -> Check:
    if platform.simulated:
        if policy.allow_simulated:
            return passed("policy.platform", "SIMULATED platform accepted (allow_simulated: true)")
        return failed("policy.platform", "evidence is SIMULATED and the policy does not allow simulation")
    if platform.name in policy.platforms:
        return passed("policy.platform", f"{platform.name} is an accepted platform")
    return failed("policy.platform", f"{platform.name} is not in the policy's platforms {policy.platforms}")


def _verify_platform(evidence: Evidence, trust: Trust, now: datetime, appraisal: Appraisal, *,
                     caller_input: bool = False) -> tuple[registry.Platform, VerifiedEvidence] | None:
    """*caller_input*: the caller gave these bytes itself (a file), so evidence that cannot be
    read at all is its bad input (UnreadableEvidence is raised), not a failed check."""
    try:
        platform = registry.get(evidence.platform)
    except UsageError as exc:  # unknown platform name is a verdict, not a crash
        appraisal.add(failed("platform", f"unknown platform '{evidence.platform}': {exc}"))
        return None
    appraisal.simulated = platform.simulated
    if evidence.media_type != platform.media_type:
        appraisal.add(failed("evidence.media-type", f"'{evidence.media_type}' is not what platform "
                                                    f"{platform.name} produces ({platform.media_type})"))
        return None
    try:
        verified = platform.verify(evidence, trust, now)
    except EvidenceError as exc:
        if caller_input and isinstance(exc, UnreadableEvidence):
            raise
        appraisal.add(failed("evidence.parse", str(exc)))
        return None
    appraisal.add(verified.checks)
    appraisal.measurements = dict(verified.measurements)
    appraisal.tcb = dict(verified.tcb)
    appraisal.evidence = dict(verified.summary)
    return platform, verified


def verify_evidence(evidence: Evidence, *, policy: Policy | None, now: datetime, trust: Trust | None = None,
                    expected_report_data: bytes | None = None) -> Appraisal:
    """Verify raw hardware evidence (no certificate). Without a policy: authenticity only.
    Evidence that cannot be read at all (not its format, or a layout this verifier does not read)
    raises UnreadableEvidence: these are the caller's own bytes, and no verdict was reached."""
    appraisal = Appraisal(platform=evidence.platform, policy_applied=policy is not None)
    trust = trust_for(policy, trust)
    got = _verify_platform(evidence, trust, now, appraisal, caller_input=True)
    if got is None:
        return appraisal
    platform, verified = got
    if expected_report_data is not None:
        ok = hmac.compare_digest(verified.report_data, expected_report_data)
        appraisal.add((passed if ok else failed)("binding.report-data", "REPORT_DATA " + (
            "equals the expected value" if ok else "differs from the expected value")))
    if policy is not None:
        appraisal.add(_platform_accepted(platform, policy))
        appraisal.add(platform.appraise(verified, policy))
    return appraisal


def issued_at(claims: Claims) -> datetime:
    return datetime.fromtimestamp(claims.iat, UTC)


def verdict_valid_until(rc: RatlsCertificate, policy: Policy | None) -> datetime:
    """The last instant at which a passing verdict on *rc* still holds without looking again:
    the earliest bound of the time checks in this module (certificate.validity: notAfter;
    claims.validity: exp; policy.claims.max-age: iat + max_age). A caller that caches verdicts
    (``ratls proxy``) must verify again after it, or it would outlive what ``ratls verify`` accepts."""
    bounds = [rc.cert.not_valid_after_utc, datetime.fromtimestamp(rc.claims.exp, UTC)]
    if policy is not None and policy.claims.max_age is not None:
        bounds.append(issued_at(rc.claims) + policy.claims.max_age)
    return min(bounds)


def _claims_checks(claims: Claims, policy: Policy, now: datetime, nonce: bytes | None) -> list[Check]:
    checks: list[Check] = []
    cp = policy.claims
    if cp.models is not None:
        served = (claims.models or {}).get("models", {}) if claims.models else {}
        manifest = (claims.models or {}).get("manifest")
        for key, name, digest in pinned_models(cp.models):
            have = manifest if key is ALL else served.get(name)
            if have == digest:
                checks.append(passed(f"policy.claims.model.{name}", f"{name} digest {digest}"))
            elif have is None:
                checks.append(failed(f"policy.claims.model.{name}", f"the gateway does not attest model '{name}'"))
            else:
                checks.append(failed(f"policy.claims.model.{name}", f"{name} is {have}, policy pins {digest}"))
    if cp.config is not None:
        ok = claims.config == cp.config
        if claims.config is None:
            checks.append(failed("policy.claims.config", f"the certificate carries no config claim; the policy pins "
                                                         f"{cp.config}"))
        else:
            checks.append((passed if ok else failed)("policy.claims.config", f"gateway config {claims.config}" + (
                "" if ok else f" differs from the pinned {cp.config}")))
    if cp.max_age is not None:
        age = now - issued_at(claims)
        ok = age <= cp.max_age
        checks.append((passed if ok else failed)("policy.claims.max-age", f"evidence is {int(age.total_seconds())}s "
                                                 f"old (max {int(cp.max_age.total_seconds())}s)"))
    if nonce is not None:
        ok = claims.nonce is not None and hmac.compare_digest(claims.nonce, nonce)
        checks.append((passed if ok else failed)("freshness.nonce", "claims carry the challenge nonce" if ok else
                                                 "claims do not carry the nonce this verifier sent"))
    return checks


def verify_claims_binding(claims_cbor: bytes, claims: Claims, spki: bytes, verified_report_data: bytes,
                          now: datetime) -> list[Check]:
    checks: list[Check] = []
    key_hash = spki_sha256(spki)
    if hmac.compare_digest(key_hash, claims.pubkey_sha256):
        checks.append(passed("binding.pubkey-hash", "claims pubkey-hash equals SHA-256 of the served key"))
    else:
        checks.append(failed("binding.pubkey-hash", "claims pubkey-hash does not match the certificate's key: "
                                                    "evidence from another key was transplanted"))
    expected = report_data_for(claims_cbor)
    if hmac.compare_digest(expected, verified_report_data):
        checks.append(passed("binding.report-data", "REPORT_DATA = SHA-512(\"ratls/1 claims\\0\" || claims)"))
    else:
        checks.append(failed("binding.report-data", "REPORT_DATA does not equal the digest of the claims: the claims "
                                                    "were altered or do not belong to this evidence"))
    ts = now.timestamp()
    if claims.iat - CLOCK_SKEW.total_seconds() <= ts <= claims.exp:
        checks.append(passed("claims.validity", "now is within claims iat..exp"))
    else:
        checks.append(failed("claims.validity", f"claims are valid {claims.iat}..{claims.exp} (Unix), now is "
                                                f"{int(ts)}: expired or not yet valid"))
    return checks


def verify_fresh_evidence(collection_bytes: bytes, served_spki: bytes, *, policy: Policy | None, now: datetime,
                          nonce: bytes, trust: Trust | None = None) -> Appraisal:
    """Verify evidence from the evidence API: a CMW collection like the certificate's, whose
    claims must carry *nonce* and the key of the certificate the server presents."""
    from .cert import devices_from_collection, evidence_from_collection
    from .cmw import decode_collection

    appraisal = Appraisal(platform=None, policy_applied=policy is not None)
    try:
        collection = decode_collection(collection_bytes)
        claims_cbor, claims, evidence = evidence_from_collection(collection)
        devices = devices_from_collection(collection)
    except EvidenceError as exc:
        appraisal.add(failed("fresh.parse", str(exc)))
        return appraisal
    appraisal.platform = claims.platform
    appraisal.claims = claims.to_json()
    trust = trust_for(policy, trust)
    got = _verify_platform(evidence, trust, now, appraisal)
    if got is None:
        return appraisal
    platform, verified = got
    appraisal.add(verify_claims_binding(claims_cbor, claims, served_spki, verified.report_data, now))
    if policy is not None:
        appraisal.add(_platform_accepted(platform, policy))
        appraisal.add(platform.appraise(verified, policy))
    verify_devices(claims, devices, trust, now, policy, appraisal)
    appraisal.add(_claims_checks(claims, policy or Policy(), now, nonce))
    return appraisal


def verify_certificate(
    cert: bytes | x509.Certificate, *, policy: Policy | None, now: datetime, trust: Trust | None = None,
    nonce: bytes | None = None,
) -> tuple[Appraisal, RatlsCertificate | None]:
    """Full RA-TLS verification of a certificate (as served, or from a file)."""
    appraisal = Appraisal(platform=None, policy_applied=policy is not None)
    try:
        x = cert if isinstance(cert, x509.Certificate) else load_x509(cert)
        rc = parse_ratls(x)
    except EvidenceError as exc:
        appraisal.add(failed("certificate.parse", str(exc)))
        return appraisal, None
    appraisal.platform = rc.claims.platform
    appraisal.claims = rc.claims.to_json()
    if x.not_valid_before_utc <= now <= x.not_valid_after_utc:
        appraisal.add(passed("certificate.validity", f"valid {x.not_valid_before_utc.isoformat()} to "
                                                     f"{x.not_valid_after_utc.isoformat()}"))
    else:
        appraisal.add(failed("certificate.validity", f"certificate is not valid at {now.isoformat()} (valid "
                                                     f"{x.not_valid_before_utc.isoformat()} to "
                                                     f"{x.not_valid_after_utc.isoformat()})"))
    try:
        x.verify_directly_issued_by(x)
        appraisal.add(passed("certificate.self-signature", "self-signed by the attested key"))
    except Exception:  # noqa: BLE001 - any failure here means the signature is not valid
        appraisal.add(failed("certificate.self-signature", "certificate is not validly self-signed by its key"))
    trust = trust_for(policy, trust)
    got = _verify_platform(rc.evidence, trust, now, appraisal)
    if got is None:
        return appraisal, rc
    platform, verified = got
    appraisal.add(verify_claims_binding(rc.claims_cbor, rc.claims, spki_der(x.public_key()),  # type: ignore[arg-type]
                                        verified.report_data, now))
    if policy is not None:
        appraisal.add(_platform_accepted(platform, policy))
        appraisal.add(platform.appraise(verified, policy))
    verify_devices(rc.claims, rc.devices, trust, now, policy, appraisal)
    if policy is not None:
        appraisal.add(_claims_checks(rc.claims, policy, now, nonce))
    elif nonce is not None:
        appraisal.add(_claims_checks(rc.claims, Policy(), now, nonce))
    return appraisal, rc
