"""RA-TLS certificates end to end on the simulated platform, and every binding failure."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from ratls import cmw
from ratls.cert import BACKDATE, build_certificate, generate_key
from ratls.claims import Claims
from ratls.evidence import Evidence
from ratls.issue import issue_certificate, make_claims
from ratls.pipeline import verdict_valid_until, verify_certificate
from ratls.platforms.sim.chain import SimChain, generate_chain
from ratls.platforms.sim.platform import SimPlatform
from ratls.policy import Policy, parse_policy

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
MODELS = {"manifest": "sha256:" + "a" * 64, "models": {"add_sub": "sha256:" + "b" * 64}}
CONFIG = "sha256:" + "c" * 64


def sim_policy(chain: SimChain, **extra) -> Policy:
    doc = {"version": 1, "platforms": [], "allow_simulated": True,
           "simulated": {"root_sha256": chain.root_sha256},
           "sev-snp": {"measurements": [chain.measurement.hex()], "guest_policy": {"debug": False}}}
    for key, value in extra.items():
        doc[key] = value
    return parse_policy(doc)


def issue(chain: SimChain, **kw):
    key = generate_key()
    issued = issue_certificate(SimPlatform(chain=chain), key, now=NOW, models=MODELS, config=CONFIG, **kw)
    return key, issued


def names(appraisal) -> list[str]:
    return [c.name for c in appraisal.failures]


def test_round_trip_passes(sim_chain: SimChain) -> None:
    _, issued = issue(sim_chain)
    appraisal, rc = verify_certificate(issued.cert, policy=sim_policy(sim_chain), now=NOW)
    assert appraisal.ok, appraisal.summary()
    assert appraisal.simulated and appraisal.platform == "sim"
    assert rc is not None and rc.claims.models == MODELS
    assert "SIMULATED" in appraisal.summary()
    doc = appraisal.to_json()
    assert doc["schema"] == "ratls-appraisal/1" and doc["verdict"] == "pass" and doc["simulated"] is True


def test_sim_refused_without_allow_simulated(sim_chain: SimChain) -> None:
    _, issued = issue(sim_chain)
    policy = parse_policy({"version": 1, "platforms": ["sev-snp"],
                           "sev-snp": {"measurements": [sim_chain.measurement.hex()]}})
    appraisal, _ = verify_certificate(issued.cert, policy=policy, now=NOW)
    assert set(names(appraisal)) == {"sim.root", "snp.chain", "policy.platform"}


def test_sim_refused_when_other_root_pinned(sim_chain: SimChain) -> None:
    other = generate_chain()
    _, issued = issue(other)
    appraisal, _ = verify_certificate(issued.cert, policy=sim_policy(sim_chain), now=NOW)
    assert "sim.root" in names(appraisal) and "policy.snp.measurement" not in names(appraisal)


def test_transplanted_evidence_other_key(sim_chain: SimChain) -> None:
    _, issued = issue(sim_chain)
    attacker = generate_key()
    forged = build_certificate(attacker, issued.claims_cbor, issued.evidence, not_before=NOW - BACKDATE,
                               not_after=NOW + dt.timedelta(hours=1), common_name="x", sans=["localhost"])
    appraisal, _ = verify_certificate(forged, policy=sim_policy(sim_chain), now=NOW)
    assert names(appraisal) == ["binding.pubkey-hash"]


def test_claims_altered_after_evidence(sim_chain: SimChain) -> None:
    key, issued = issue(sim_chain)
    c = issued.claims
    altered = Claims(c.pubkey_sha256, c.iat, c.exp, c.platform, c.instance, c.models, "sha256:" + "d" * 64)
    forged = build_certificate(key, altered.encode(), issued.evidence, not_before=NOW - BACKDATE,
                               not_after=NOW + dt.timedelta(hours=1), common_name="x", sans=[])
    appraisal, _ = verify_certificate(forged, policy=sim_policy(sim_chain), now=NOW)
    assert names(appraisal) == ["binding.report-data"]


def test_expired_certificate_with_valid_evidence(sim_chain: SimChain) -> None:
    _, issued = issue(sim_chain, lifetime=dt.timedelta(hours=1))
    later = NOW + dt.timedelta(hours=2)
    appraisal, _ = verify_certificate(issued.cert, policy=sim_policy(sim_chain), now=later)
    assert set(names(appraisal)) == {"certificate.validity", "claims.validity"}


def test_wrong_measurement(sim_chain: SimChain) -> None:
    _, issued = issue(sim_chain)
    policy = parse_policy({"version": 1, "allow_simulated": True, "simulated": {"root_sha256": sim_chain.root_sha256},
                           "sev-snp": {"measurements": ["00" * 48]}})
    appraisal, _ = verify_certificate(issued.cert, policy=policy, now=NOW)
    assert names(appraisal) == ["policy.snp.measurement"]


def test_policy_without_measurements_fails_closed(sim_chain: SimChain) -> None:
    _, issued = issue(sim_chain)
    policy = parse_policy({"version": 1, "allow_simulated": True, "simulated": {"root_sha256": sim_chain.root_sha256}})
    appraisal, _ = verify_certificate(issued.cert, policy=policy, now=NOW)
    assert names(appraisal) == ["policy.snp.measurement"]


def test_model_and_config_pins(sim_chain: SimChain) -> None:
    _, issued = issue(sim_chain)
    good = sim_policy(sim_chain, claims={"models": {"add_sub": MODELS["models"]["add_sub"]}, "config": CONFIG,
                                         "max_age": "1h"})
    assert verify_certificate(issued.cert, policy=good, now=NOW)[0].ok
    bad = sim_policy(sim_chain, claims={"models": {"add_sub": "sha256:" + "0" * 64, "other": "sha256:" + "0" * 64},
                                        "config": "sha256:" + "0" * 64})
    appraisal, _ = verify_certificate(issued.cert, policy=bad, now=NOW)
    assert set(names(appraisal)) == {"policy.claims.model.add_sub", "policy.claims.model.other",
                                     "policy.claims.config"}
    stale = sim_policy(sim_chain, claims={"max_age": "1m"})
    appraisal, _ = verify_certificate(issued.cert, policy=stale, now=NOW + dt.timedelta(minutes=5))
    assert names(appraisal) == ["policy.claims.max-age"]


def test_nonce_required(sim_chain: SimChain) -> None:
    key = generate_key()
    platform = SimPlatform(chain=sim_chain)
    nonce = b"n" * 32
    claims = make_claims(key, platform="sim", now=NOW, lifetime=dt.timedelta(hours=1), instance=b"i" * 16,
                         nonce=nonce)
    from ratls.issue import collect_for_claims
    claims_cbor, evidence, _ = collect_for_claims(platform, claims)
    cert = build_certificate(key, claims_cbor, evidence, not_before=NOW - BACKDATE,
                             not_after=NOW + dt.timedelta(hours=1), common_name="x", sans=[])
    assert verify_certificate(cert, policy=sim_policy(sim_chain), now=NOW, nonce=nonce)[0].ok
    appraisal, _ = verify_certificate(cert, policy=sim_policy(sim_chain), now=NOW, nonce=b"m" * 32)
    assert names(appraisal) == ["freshness.nonce"]


def test_plain_certificate_and_garbage(sim_chain: SimChain) -> None:
    key = generate_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plain")])
    plain = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
             .serial_number(1).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1))
             .sign(key, hashes.SHA256()))
    appraisal, rc = verify_certificate(plain, policy=sim_policy(sim_chain), now=NOW)
    assert rc is None and names(appraisal) == ["certificate.parse"]
    assert "ordinary TLS certificate" in appraisal.failures[0].detail
    _, issued = issue(sim_chain)
    from cryptography.hazmat.primitives.serialization import Encoding
    der = issued.cert.public_bytes(Encoding.DER)
    appraisal, rc = verify_certificate(der[: len(der) // 2], policy=sim_policy(sim_chain), now=NOW)
    assert rc is None and names(appraisal) == ["certificate.parse"]


def test_critical_cmw_extension_refused(sim_chain: SimChain) -> None:
    key = generate_key()
    _, issued = issue(sim_chain)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    from ratls.cert import build_collection
    value = cmw.encode_extension_value(build_collection(issued.claims_cbor, issued.evidence))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1))
            .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(cmw.OID_CMW), value), critical=True)
            .sign(key, hashes.SHA256()))
    appraisal, _ = verify_certificate(cert, policy=sim_policy(sim_chain), now=NOW)
    assert names(appraisal) == ["certificate.parse"] and "critical" in appraisal.failures[0].detail


def test_unknown_platform_and_media_type(sim_chain: SimChain) -> None:
    key = generate_key()
    _, issued = issue(sim_chain)
    for evidence, expected in (
        (Evidence("nope", issued.evidence.media_type, issued.evidence.raw), "platform"),
        (Evidence("sim", "application/other", issued.evidence.raw), "evidence.media-type"),
    ):
        c = issued.claims
        claims = Claims(c.pubkey_sha256, c.iat, c.exp, evidence.platform, c.instance)
        from ratls.cert import spki_der
        from ratls.claims import spki_sha256
        claims = Claims(spki_sha256(spki_der(key.public_key())), c.iat, c.exp, evidence.platform, c.instance)
        cert = build_certificate(key, claims.encode(), evidence, not_before=NOW - BACKDATE,
                                 not_after=NOW + dt.timedelta(hours=1), common_name="x", sans=[])
        appraisal, _ = verify_certificate(cert, policy=sim_policy(sim_chain), now=NOW)
        assert names(appraisal) == [expected]


def test_p384_key(sim_chain: SimChain) -> None:
    key = generate_key("p384")
    issued = issue_certificate(SimPlatform(chain=sim_chain), key, now=NOW)
    assert verify_certificate(issued.cert, policy=sim_policy(sim_chain), now=NOW)[0].ok


@pytest.mark.parametrize("curve", ["p521"])
def test_unknown_curve(curve: str) -> None:
    from ratls.errors import UsageError
    with pytest.raises(UsageError):
        generate_key(curve)


@pytest.mark.parametrize(("lifetime", "max_age", "until"), [
    (dt.timedelta(hours=24), "60s", dt.timedelta(seconds=60)),  # iat + max_age comes first
    (dt.timedelta(hours=24), None, dt.timedelta(hours=24)),     # notAfter and claims exp
    (dt.timedelta(minutes=2), "1h", dt.timedelta(minutes=2)),
])
def test_verdict_valid_until_is_where_verification_starts_failing(
        sim_chain: SimChain, lifetime: dt.timedelta, max_age: str | None, until: dt.timedelta) -> None:
    _, issued = issue(sim_chain, lifetime=lifetime)
    policy = sim_policy(sim_chain, **({"claims": {"max_age": max_age}} if max_age else {}))
    appraisal, rc = verify_certificate(issued.cert, policy=policy, now=NOW)
    assert appraisal.ok and rc is not None
    last = verdict_valid_until(rc, policy)
    assert last == NOW + until
    assert verify_certificate(issued.cert, policy=policy, now=last)[0].ok
    assert not verify_certificate(issued.cert, policy=policy, now=last + dt.timedelta(seconds=1))[0].ok
