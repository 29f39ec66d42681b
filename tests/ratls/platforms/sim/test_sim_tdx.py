"""The simulated TDX platform: the real TDX verifier accepts it only when the policy pins
its root and allows simulation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ratls import registry
from ratls.cert import generate_key, load_x509
from ratls.issue import issue_certificate
from ratls.pipeline import verify_certificate
from ratls.platforms.sim.roots import simulated_root_sha256
from ratls.platforms.sim.tdx_chain import load_tdx_chain
from ratls.policy import parse_policy


def _policy(root: str | None, mrtd: str, **extra: object):  # type: ignore[no-untyped-def]
    doc: dict[str, object] = {"version": 1, "platforms": ["tdx"], "tdx": {"mrtd": [mrtd], **extra}}
    if root is not None:
        doc.update({"allow_simulated": True, "simulated": {"root_sha256": root}})
    return parse_policy(doc)


def test_issue_and_verify_with_pinned_root(tmp_path: Path) -> None:
    platform = registry.get("sim-tdx", state_dir=tmp_path)
    now = datetime.now(UTC)
    issued = issue_certificate(platform, generate_key("p256"), now=now, lifetime=__import__("datetime").timedelta(
        hours=1))
    chain = load_tdx_chain(tmp_path / "tdx")  # persisted, so the root a policy pins stays the same
    policy = _policy(chain.root_sha256, chain.mrtd.hex(), sept_ve_disable=True)
    appraisal, rc = verify_certificate(issued.cert, policy=policy, now=now)
    assert appraisal.ok, [c for c in appraisal.checks if not c.ok]
    assert appraisal.simulated and appraisal.platform == "sim-tdx"
    assert rc is not None and simulated_root_sha256(rc.evidence) == chain.root_sha256
    # the fake configfs tree was used and cleaned up
    assert (tmp_path / "tdx" / "configfs-tsm" / "report").is_dir()
    assert not any((tmp_path / "tdx" / "configfs-tsm" / "report").iterdir())


def test_refused_without_the_root_pin_or_without_allow_simulated(tmp_path: Path) -> None:
    platform = registry.get("sim-tdx", state_dir=tmp_path)
    now = datetime.now(UTC)
    cert = issue_certificate(platform, generate_key("p256"), now=now).cert
    mrtd = load_tdx_chain(tmp_path / "tdx").mrtd.hex()
    other_root = "ab" * 32
    appraisal, _ = verify_certificate(cert, policy=_policy(other_root, mrtd), now=now)
    failed = {c.name: c.detail for c in appraisal.checks if not c.ok}
    assert "not pinned" in failed["sim.root"]
    assert "tdx.pck-chain" in failed  # and the real Intel root does not sign it either
    hardware_only = _policy(None, mrtd)
    appraisal, _ = verify_certificate(cert, policy=hardware_only, now=now)
    failed = {c.name: c.detail for c in appraisal.checks if not c.ok}
    assert "SIMULATED" in failed["policy.platform"]


def test_certificate_round_trips_through_pem(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    platform = registry.get("sim-tdx", state_dir=tmp_path)
    cert = issue_certificate(platform, generate_key("p256"), now=datetime.now(UTC)).cert
    again = load_x509(cert.public_bytes(Encoding.PEM))
    assert again == cert


def test_der_certificate_holding_pem_collateral_loads_as_der(tmp_path: Path) -> None:
    """Regression: the DER certificate contains PEM issuer chains (inside the TDX collateral);
    sniffing for '-----BEGIN' alone made the loader treat it as PEM and fail."""
    from cryptography.hazmat.primitives.serialization import Encoding

    platform = registry.get("sim-tdx", state_dir=tmp_path)
    cert = issue_certificate(platform, generate_key("p256"), now=datetime.now(UTC)).cert
    der = cert.public_bytes(Encoding.DER)
    assert b"-----BEGIN CERTIFICATE-----" in der
    assert load_x509(der) == cert


def test_verifier_fetches_missing_collateral_only_when_online(tmp_path: Path) -> None:
    from dataclasses import replace

    from ratls.pipeline import verify_evidence
    from ratls.testing.pccs import LoopbackPccs
    from ratls.trust import Trust

    platform = registry.get("sim-tdx", state_dir=tmp_path)
    evidence = platform.collect(bytes(64))
    chain = load_tdx_chain(tmp_path / "tdx")
    bare = replace(evidence, endorsements={})
    now = datetime.now(UTC)
    offline = Trust(simulated_roots=(chain.root_sha256,))
    a = verify_evidence(bare, policy=None, now=now, trust=offline)
    assert {c.name for c in a.checks if not c.ok} == {"tdx.collateral"}
    with LoopbackPccs(chain.collateral) as pccs:
        online = replace(offline, kds_offline=False, pccs_url=pccs.url, kds_cache_dir=tmp_path / "cache")
        a = verify_evidence(bare, policy=None, now=now, trust=online)
        assert a.ok, [c for c in a.checks if not c.ok]
        assert pccs.requests
    assert list((tmp_path / "cache").glob("tdx-collateral-*.json"))
