"""The GPU device type's own steps beyond the SPDM checks: stapled OCSP over the whole chain,
reports that do not name their RIMs, unreadable chains, RIM precedence and the mode check."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from ratls.devices import DeviceEvidence
from ratls.platforms.nvidia.appraise import appraise_gpus
from ratls.platforms.nvidia.device import MEDIA_TYPE, verify_device
from ratls.platforms.nvidia.policy import GpuPolicy
from ratls.platforms.nvidia.sim import SimGpu, fwid_extension_value, generate
from ratls.platforms.nvidia.types import OcspStatus, OpaqueType
from ratls.policy import Policy
from ratls.trust import Trust

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NONCE = bytes(range(32))


def _cert(cn: str, key, issuer: tuple[x509.Name, object] | None, *, ca: bool, ext=None) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer[0] if issuer else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ext is not None:
        b = b.add_extension(ext, critical=False)
    return b.sign(issuer[1] if issuer else key, hashes.SHA384())


@pytest.fixture(scope="module")
def pki() -> dict:
    gpu = generate(NOW - timedelta(days=1))
    keys = {n: ec.generate_private_key(ec.SECP384R1()) for n in ("root", "identity")}
    root = _cert("Test Device Identity CA", keys["root"], None, ca=True)
    identity = _cert("Test GH100 Identity", keys["identity"], (root.subject, keys["root"]), ca=True)
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("2.23.133.5.4.1"),
                                     fwid_extension_value(gpu.leaf_key.public_key(), gpu.fwid))
    leaf = _cert("Test GH100 A01 GSP FMC LF", gpu.leaf_key, (identity.subject, keys["identity"]), ca=False, ext=ext)
    return {"gpu": gpu, "root": root, "root_key": keys["root"], "identity": identity, "leaf": leaf}


def _ocsp(pki: dict, status: ocsp.OCSPCertStatus) -> bytes:
    revoked = status == ocsp.OCSPCertStatus.REVOKED
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=pki["identity"], issuer=pki["root"], algorithm=hashes.SHA384(), cert_status=status,
        this_update=NOW - timedelta(hours=1), next_update=NOW + timedelta(days=1),
        revocation_time=NOW - timedelta(days=1) if revoked else None,
        revocation_reason=x509.ReasonFlags.key_compromise if revoked else None)
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, pki["root"])
    return builder.sign(pki["root_key"], hashes.SHA384()).public_bytes(Encoding.DER)


def _device(pki: dict, gpu: SimGpu | None = None, report: bytes | None = None, **endorsements: bytes) -> DeviceEvidence:
    gpu = gpu or pki["gpu"]
    chain = pki["leaf"].public_bytes(Encoding.DER) + pki["identity"].public_bytes(Encoding.DER)
    return DeviceEvidence("gpu0", MEDIA_TYPE, report or gpu.report(NONCE), {"chain": chain, **endorsements})


def _verify(pki: dict, device: DeviceEvidence):
    return verify_device(device, NONCE, {"cc": True, "devtools": False}, Trust(), NOW, roots=[pki["root"]],
                         rim_roots=[], simulated=False)


def names(checks) -> list[str]:
    return [c.name for c in checks if not c.ok]


def test_the_chain_verifies_without_ocsp(pki: dict) -> None:
    gpu = _verify(pki, _device(pki))
    assert gpu.authentic, names(gpu.checks)
    assert gpu.ocsp == {pki["identity"].subject.rfc4514_string(): OcspStatus.NOT_CHECKED}


def test_a_revoked_certificate_right_below_the_root_is_refused(pki: dict) -> None:
    gpu = _verify(pki, _device(pki, **{"ocsp-1": _ocsp(pki, ocsp.OCSPCertStatus.REVOKED)}))
    assert "gpu0.ocsp" in names(gpu.checks) and not gpu.authentic
    assert gpu.ocsp[pki["identity"].subject.rfc4514_string()] is OcspStatus.REVOKED


def test_a_stapled_answer_for_no_certificate_is_refused(pki: dict) -> None:
    gpu = _verify(pki, _device(pki, **{"ocsp-1": _ocsp(pki, ocsp.OCSPCertStatus.GOOD),
                                       "ocsp-7": _ocsp(pki, ocsp.OCSPCertStatus.GOOD)}))
    assert names(gpu.checks) == ["gpu0.ocsp"] and "ocsp-7" in next(c.detail for c in gpu.checks if not c.ok)


def test_unknown_is_for_the_policy(pki: dict) -> None:
    gpu = _verify(pki, _device(pki, **{"ocsp-1": _ocsp(pki, ocsp.OCSPCertStatus.UNKNOWN)}))
    assert gpu.authentic
    section = GpuPolicy(required=True, require_rim_match=False, require_ocsp=True)
    refused = appraise_gpus([gpu], section, Policy(platforms=["sev-snp"]))
    assert [c.name for c in refused if not c.ok] == ["policy.nvidia-gpu.gpu0.ocsp-unknown"]
    allowed = appraise_gpus([gpu], dataclasses.replace(section, allow_unknown_ocsp=True), Policy(platforms=["x"]))
    assert all(c.ok for c in allowed)
    good = _verify(pki, _device(pki, **{"ocsp-1": _ocsp(pki, ocsp.OCSPCertStatus.GOOD)}))
    assert all(c.ok for c in appraise_gpus([good], section, Policy(platforms=["x"])))
    missing = _verify(pki, _device(pki))
    assert "policy.nvidia-gpu.gpu0.ocsp" in names(appraise_gpus([missing], section, Policy(platforms=["x"])))


def test_a_report_that_does_not_name_its_rims_is_a_verdict(pki: dict) -> None:
    gpu: SimGpu = pki["gpu"]
    fields = {k: v for k, v in gpu.opaque_fields().items() if k != OpaqueType.PROJECT}
    from ratls.platforms.nvidia.abi import encode_report
    from ratls.platforms.nvidia.types import MeasurementBlock
    blocks = [MeasurementBlock(i + 1, 1, gpu.measurement(i)) for i in range(64)]
    report = encode_report(NONCE, blocks, fields, bytes(32), gpu._sign)
    verified = _verify(pki, _device(pki, report=report))
    assert names(verified.checks) == ["gpu0.rim-ids"]


def test_an_unreadable_chain_is_a_parse_failure_and_names_no_rims(pki: dict) -> None:
    from ratls.platforms.nvidia.device import NvidiaGpu
    bad = _device(pki)
    garbled = bytearray(bad.endorsements["chain"])
    garbled[40:60] = b"\xff" * 20
    device = dataclasses.replace(bad, endorsements={"chain": bytes(garbled)})
    assert NvidiaGpu.reference_ids(device) == []
    assert not _verify(pki, device).authentic



def test_one_gpu_twice_is_not_two_gpus(pki: dict) -> None:
    first, second = _verify(pki, _device(pki)), _verify(pki, _device(pki))
    second.label = "gpu1"
    checks = appraise_gpus([first, second], GpuPolicy(required=True, count=2, require_rim_match=False),
                           Policy(platforms=["x"]))
    assert [c.name for c in checks if not c.ok] == ["policy.nvidia-gpu.distinct"]


def test_the_verifiers_own_rims_win_over_stapled_ones(tmp_path, pki: dict) -> None:
    from ratls.platforms.nvidia.device import SimNvidiaGpu
    from ratls.platforms.nvidia.types import RimKind
    gpu: SimGpu = pki["gpu"]
    rims = gpu.rims_by_id()
    own = tmp_path / "rims"
    own.mkdir()
    for ref_id, xml in rims.items():
        (own / f"{ref_id}.xml").write_bytes(xml)
    device = DeviceEvidence("gpu0", "application/vnd.ratls.sim-nvidia-spdm-measurements", gpu.report(NONCE), {
        "chain": gpu.chain_pem(), **gpu.endorsements(),
        "driver-rim": gpu.rim(RimKind.DRIVER, version="550.90.07")})  # a stapled RIM for another version
    trust = Trust(simulated_roots=(gpu.root_sha256, gpu.rim_root_sha256))
    state = {"cc": True, "devtools": False}
    stapled_only = SimNvidiaGpu.verify(device, NONCE, state, trust, NOW)
    assert "gpu0.driver-rim.version" in names(stapled_only.checks)
    assert SimNvidiaGpu.summary(stapled_only)["measurements"] in ("mismatch", "not compared (no valid RIM)")
    mine = SimNvidiaGpu.verify(device, NONCE, state, dataclasses.replace(trust, nvidia_rim_dir=own), NOW)
    assert mine.authentic and SimNvidiaGpu.summary(mine)["measurements"] == "match"
