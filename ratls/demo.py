"""`make demo-library`: issue an RA-TLS certificate on the simulated platform, write a policy
pinning it, verify it, show what a tampered or foreign certificate gets, and verify a real AMD
SEV-SNP report when the vendor vectors are present; then the same on simulated and real TDX.

Exits non-zero if any step does not give the expected verdict.
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .cert import BACKDATE, build_certificate, generate_key
from .evidence import Evidence
from .issue import issue_certificate
from .pipeline import verify_certificate, verify_evidence
from .platforms.sim.chain import load_or_create
from .platforms.sim.platform import SimPlatform
from .platforms.snp.platform import MEDIA_TYPE
from .policy import parse_policy


def _step(title: str) -> None:
    print(f"\n=== {title}")


def _tdx(state: Path, vectors: Path, now: datetime) -> int:
    """The same flow on Intel TDX: the simulated TDX platform (quotes through a fake
    configfs-tsm tree, Intel-format collateral), then a real quote with its collateral."""
    from .platforms.sim.tdx_platform import SimTdxPlatform
    from .platforms.tdx.platform import COLLATERAL_LABEL
    from .platforms.tdx.platform import MEDIA_TYPE as TDX_MEDIA

    failures = 0
    platform = SimTdxPlatform(state_dir=state)
    _step("issue on the SIMULATED TDX platform and verify with the real TDX verifier (dcap-qvl for the TCB)")
    issued = issue_certificate(platform, generate_key(), now=now, lifetime=timedelta(hours=1))
    policy = parse_policy({"version": 1, "platforms": ["tdx"], "allow_simulated": True,
                           "simulated": {"root_sha256": platform.chain.root_sha256},
                           "tdx": {"mrtd": [platform.chain.mrtd.hex()], "debug": False,
                                   "accept_tcb_status": ["UpToDate"]}})
    appraisal, _ = verify_certificate(issued.cert, policy=policy, now=now)
    print(appraisal.summary())
    failures += not appraisal.ok
    quote_dir = vectors / "tdx" / "v4_dcap-qvl"
    if (quote_dir / "quote.bin").is_file():
        at = datetime.fromtimestamp(1752919234, UTC)  # inside the recorded collateral's validity
        _step(f"a real Intel TDX quote v4 with its collateral, verified to Intel's root at {at.isoformat()}")
        evidence = Evidence("tdx", TDX_MEDIA, (quote_dir / "quote.bin").read_bytes(),
                            {COLLATERAL_LABEL: (quote_dir / "collateral.json").read_bytes()})
        real = verify_evidence(evidence, policy=None, now=at)
        print(real.summary())
        failures += not real.ok
    return failures


def main() -> int:
    failures = 0
    state = Path(os.environ.get("RATLS_SIM_DIR", Path(".demo") / "sim"))
    chain = load_or_create(state)
    now = datetime.now(UTC)
    _step(f"issue an RA-TLS certificate on the SIMULATED platform (state in {state})")
    key = generate_key()
    issued = issue_certificate(SimPlatform(chain=chain), key, now=now, lifetime=timedelta(hours=1),
                               sans=["localhost", "127.0.0.1"])
    print(f"certificate with {len(issued.evidence.raw)}-byte SNP-format report, claims for key "
          f"{issued.claims.pubkey_sha256.hex()[:16]}...")
    policy = parse_policy({"version": 1, "platforms": [], "allow_simulated": True,
                           "simulated": {"root_sha256": chain.root_sha256},
                           "sev-snp": {"measurements": [chain.measurement.hex()],
                                       "guest_policy": {"debug": False, "migrate_ma": False}, "vmpl": 0}})

    _step("verify it against a policy that pins the simulated root and measurement")
    appraisal, _ = verify_certificate(issued.cert, policy=policy, now=now)
    print(appraisal.summary())
    failures += not appraisal.ok

    _step("a certificate for another key carrying the same evidence is refused")
    forged = build_certificate(generate_key(), issued.claims_cbor, issued.evidence, not_before=now - BACKDATE,
                               not_after=now + timedelta(hours=1), common_name="mitm", sans=["localhost"])
    bad, _ = verify_certificate(forged, policy=policy, now=now)
    print("\n".join(f"  [FAIL] {c.name}: {c.detail}" for c in bad.failures))
    failures += bad.ok

    _step("the same simulated certificate against a policy that does not allow simulation")
    strict = parse_policy({"version": 1, "platforms": ["sev-snp"],
                           "sev-snp": {"measurements": [chain.measurement.hex()]}})
    bad, _ = verify_certificate(issued.cert, policy=strict, now=now)
    print("\n".join(f"  [FAIL] {c.name}: {c.detail}" for c in bad.failures))
    failures += bad.ok

    vectors = Path(os.environ.get("RATLS_VECTORS", Path(__file__).resolve().parents[2] / "shared" / "vectors"))
    report = vectors / "snp" / "genoa_v3_azure_trustee" / "report.bin"
    if report.is_file():
        _step("a real AMD SEV-SNP report (Genoa, Azure) verified to AMD's root")
        evidence = Evidence("sev-snp", MEDIA_TYPE, report.read_bytes(),
                            {"vcek": (report.parent / "vcek.pem").read_bytes()})
        real = verify_evidence(evidence, policy=None, now=now)
        print(real.summary())
        failures += not real.ok
    else:
        print(f"\n(vendor vectors not found at {vectors}; set RATLS_VECTORS to verify a real report too)")
    failures += _tdx(state, vectors, now)

    print("\ndemo: " + ("all verdicts as expected" if not failures else f"{failures} unexpected verdict(s)"))
    return 1 if failures else 0


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        sys.exit(main())
