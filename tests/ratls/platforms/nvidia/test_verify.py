"""verify_gpu_evidence: every vector gives the verdict EXPECTED_RESULTS.txt states, and each
mutation is refused by the check named for it (and only by the checks it must break)."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ratls.errors import UsageError
from ratls.platforms.nvidia.abi import REQUEST_LEN, decode_report_input, parse_report
from ratls.platforms.nvidia.certs import OID_HOPPER_FWID, device_identity_root, parse_chain_pem
from ratls.platforms.nvidia.types import GpuArch, VerifiedGpu
from ratls.platforms.nvidia.verify import verify_gpu_evidence

from . import gen
from .conftest import VECTORS_NOW

NAMES = ["gpu.parse", "gpu.nonce", "gpu.fwid", "gpu.chain", "gpu.signature"]
N931 = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
TRUSTEE = "hopper_trustee/hopperAttestationReport.txt"
SDK = "nvidia-attestation-sdk"
SDK_580 = (f"{SDK}/hopper_580.159.03/hopperAttestationReport.txt", f"{SDK}/hopper_580.159.03/hopperCertChain.txt",
           "5bb22e377702d4e1e8215a903ba094826b9ac7f731dee1fe8102958bf2840aca")
OK, NA = "ok", "n/a"
# (report, chain, request nonce) -> parse, nonce, fwid, chain, signature as EXPECTED_RESULTS.txt states them
CASES = {
    "trustee case1": ((TRUSTEE, "hopper_trustee/hopper_cert_chain_case1.txt", N931), [OK, OK, OK, OK, OK]),
    "trustee case2": ((TRUSTEE, "hopper_trustee/hopper_cert_chain_case2.txt", N931), [OK, OK, "F", "F", "F"]),
    "trustee case3": ((TRUSTEE, "hopper_trustee/hopper_cert_chain_case3.txt", N931), [OK, OK, OK, "F", OK]),
    "trustee case4": ((TRUSTEE, "hopper_trustee/hopper_cert_chain_case4.txt", N931), [OK, OK, "F", "F", "F"]),
    "go-nvtrust": (("go-nvtrust/attestationReport.txt", "go-nvtrust/gpuAkCertChain.txt",
                    "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e"), [OK, OK, NA, OK, OK]),
    "go-nvtrust invalid chain": (("go-nvtrust/attestationReport.txt", "go-nvtrust/invalidCertChain.txt",
                                  "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e"),
                                 [OK, OK, NA, "F", OK]),
    "sdk hopper 580.159.03": (SDK_580, [OK, OK, OK, OK, OK]),
    "sdk hopper 535.86.09": ((f"{SDK}/hopper_535.86.09/hopperAttestationReport.txt",
                              f"{SDK}/hopper_535.86.09/hopperCertChain.txt",
                              "27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66"),
                             [OK, OK, NA, OK, OK]),
    "sdk hopper 570.124.03": ((f"{SDK}/hopper_570.124.03/hopperAttestationReportExpired.txt",
                               f"{SDK}/hopper_570.124.03/hopperCertChainExpired.txt", N931), [OK, OK, OK, OK, OK]),
    "sdk invalid signature": ((f"{SDK}/hopper_invalid_signature/hopperAttestationReportInvalidSignature.txt",
                               f"{SDK}/hopper_535.86.09/hopperCertChain.txt", N931), [OK, OK, "F", OK, "F"]),
    "sdk gb100 575.32": ((f"{SDK}/gb100_575.32/blackwellAttestationReport.txt",
                          f"{SDK}/gb100_575.32/blackwellCertChain.txt", N931), [OK, OK, OK, OK, OK]),
}


def outcome(result: VerifiedGpu) -> list[str]:
    return [NA if c.ok and c.detail.startswith("not applicable") else OK if c.ok else "F" for c in result.checks]


def run(nvidia_vectors: Path, report: str, chain: str, nonce: str | bytes | None, **kw: object) -> VerifiedGpu:
    expected = bytes.fromhex(nonce) if isinstance(nonce, str) else nonce
    return verify_gpu_evidence("gpu0", (nvidia_vectors / report).read_bytes(), (nvidia_vectors / chain).read_bytes(),
                               expected, [device_identity_root()], VECTORS_NOW, **kw)  # type: ignore[arg-type]


def checks_of(result: VerifiedGpu) -> dict[str, bool]:
    return {c.name: c.ok for c in result.checks}


def only_failed(result: VerifiedGpu) -> set[str]:
    return {c.name for c in result.checks if not c.ok}


# --- vectors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_vector_verdicts(nvidia_vectors: Path, case: str) -> None:
    (report, chain, nonce), expected = CASES[case]
    result = run(nvidia_vectors, report, chain, nonce)
    assert [c.name for c in result.checks] == NAMES
    assert outcome(result) == expected, result.checks
    assert result.authentic is all(e != "F" for e in expected)
    assert result.report is not None and result.report.request_nonce.hex() == nonce


def test_vector_identity(nvidia_vectors: Path) -> None:
    (report, chain, nonce), _ = CASES["sdk gb100 575.32"]
    gb100 = run(nvidia_vectors, report, chain, nonce)
    assert (gb100.arch, gb100.chip, gb100.driver_version, gb100.vbios_version) == (
        GpuArch.BLACKWELL, "GB100", "575.32", "97.00.88.00.0f")
    hopper = run(nvidia_vectors, *SDK_580)
    assert (hopper.arch, hopper.chip, hopper.label, hopper.simulated) == (GpuArch.HOPPER, "GH100", "gpu0", False)
    leaf = parse_chain_pem((nvidia_vectors / SDK_580[1]).read_bytes())[0]
    assert hopper.ueid == str(leaf.serial_number)


def test_vector_failure_details(nvidia_vectors: Path) -> None:
    (report, chain, nonce), _ = CASES["sdk invalid signature"]
    details = {c.name: c.detail for c in run(nvidia_vectors, report, chain, nonce).checks}
    assert details["gpu.fwid"].startswith("report FWID 87a82912") and "GH100 A01 GSP FMC LF" in details["gpu.fwid"]
    assert "does not verify with the key of GH100 A01 GSP FMC LF" in details["gpu.signature"]
    (report, chain, nonce), _ = CASES["trustee case4"]
    details = {c.name: c.detail for c in run(nvidia_vectors, report, chain, nonce).checks}
    assert "the leaf GH100 A01 GSP BROM certifies none" in details["gpu.fwid"]
    (report, chain, nonce), _ = CASES["go-nvtrust"]
    details = {c.name: c.detail for c in run(nvidia_vectors, report, chain, nonce).checks}
    assert details["gpu.fwid"] == "not applicable (driver sends no FWID)"


def test_coco_report_fails_parse_as_stored(nvidia_vectors: Path) -> None:
    nonce = "87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fec"
    result = run(nvidia_vectors, "hopper_trustee/hopper_coco_report1.txt", "hopper_trustee/hopper_coco_certs1.txt",
                 nonce)
    assert [(c.name, c.ok) for c in result.checks] == [("gpu.parse", False)]
    assert "trailing" in result.checks[0].detail and not result.authentic and result.report is None
    # a caller that knowingly strips that one byte gets the genuine report back
    text = (nvidia_vectors / "hopper_trustee/hopper_coco_report1.txt").read_bytes().strip()
    stripped = verify_gpu_evidence("gpu0", text[:-2], (nvidia_vectors / "hopper_trustee/hopper_coco_certs1.txt")
                                   .read_bytes(), bytes.fromhex(nonce), [device_identity_root()], VECTORS_NOW)
    assert stripped.authentic, stripped.checks


def test_evidence_json_items(nvidia_vectors: Path) -> None:
    seen = 0
    for path in sorted((nvidia_vectors / SDK / "evidence_json").glob("*.json")):
        for i, item in enumerate(json.loads(path.read_text())):
            result = verify_gpu_evidence(f"gpu{i}", item["evidence"].encode(), base64.b64decode(item["certificate"]),
                                         bytes.fromhex(item["nonce"]), [device_identity_root()], VECTORS_NOW)
            assert outcome(result) == [OK] * 5, (path.name, i, result.checks)
            assert result.arch is not None and result.arch.value.upper() == item["arch"]
            seen += 1
    assert seen == 7


# --- mutations of a genuine report -------------------------------------------------------------

@pytest.fixture(scope="module")
def genuine(nvidia_vectors: Path) -> tuple[bytes, bytes, bytes]:
    report, chain, nonce = SDK_580
    return (decode_report_input((nvidia_vectors / report).read_bytes()), (nvidia_vectors / chain).read_bytes(),
            bytes.fromhex(nonce))


def verify(raw: bytes, chain: bytes | list[x509.Certificate], nonce: bytes | None, **kw: object) -> VerifiedGpu:
    return verify_gpu_evidence("gpu0", raw, chain, nonce, [device_identity_root()], VECTORS_NOW,
                               **kw)  # type: ignore[arg-type]


def test_genuine_as_raw_hex_or_certificates(genuine: tuple[bytes, bytes, bytes]) -> None:
    raw, chain, nonce = genuine
    assert verify(raw, chain, nonce).authentic
    assert verify(raw.hex().encode(), parse_chain_pem(chain), nonce).authentic
    assert verify(base64.b64encode(raw), chain, nonce, simulated=True).simulated


def test_flipped_signed_byte_fails_signature_only(genuine: tuple[bytes, bytes, bytes]) -> None:
    raw, chain, nonce = genuine
    at = REQUEST_LEN + 8 + 7 + 10  # inside the first measurement value
    flipped = raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1:]
    assert only_failed(verify(flipped, chain, nonce)) == {"gpu.signature"}
    sig = len(raw) - 5
    assert only_failed(verify(raw[:sig] + bytes([raw[sig] ^ 0x80]) + raw[sig + 1:], chain, nonce)) == {
        "gpu.signature"}


def test_nonce_mismatch_fails_nonce_only(genuine: tuple[bytes, bytes, bytes]) -> None:
    raw, chain, nonce = genuine
    other = verify(raw, chain, bytes(32))
    assert only_failed(other) == {"gpu.nonce"} and "is not the expected 0000" in other.checks[1].detail
    assert only_failed(verify(raw, chain, nonce[:16])) == {"gpu.nonce"}
    # the response nonce (the GPU's own) never counts
    assert only_failed(verify(raw, chain, parse_report(raw).response_nonce)) == {"gpu.nonce"}


def test_missing_expected_nonce_never_passes(genuine: tuple[bytes, bytes, bytes]) -> None:
    raw, chain, _ = genuine
    result = verify(raw, chain, None)
    assert only_failed(result) == {"gpu.nonce"} and "no expected nonce was given" in result.checks[1].detail
    assert not result.authentic


def test_rewritten_request_nonce_fails_nonce_and_signature(genuine: tuple[bytes, bytes, bytes]) -> None:
    raw, chain, nonce = genuine
    wanted = bytes(range(32))
    replayed = raw[:4] + wanted + raw[36:]
    assert only_failed(verify(replayed, chain, nonce)) == {"gpu.nonce", "gpu.signature"}
    assert only_failed(verify(replayed, chain, wanted)) == {"gpu.signature"}


def test_leaf_with_another_fwid(genuine: tuple[bytes, bytes, bytes]) -> None:
    """A leaf certifying another FWID (names copied from NVIDIA's leaf, signed by a generated key)."""
    raw, chain, nonce = genuine
    certs = parse_chain_pem(chain)
    key = gen.key()
    other = bytes(48)
    forged = (x509.CertificateBuilder().subject_name(certs[0].subject).issuer_name(certs[0].issuer)
              .public_key(key.public_key()).serial_number(certs[0].serial_number)
              .not_valid_before(gen.NOT_BEFORE).not_valid_after(gen.FOREVER)
              .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(OID_HOPPER_FWID),
                                                        gen.hopper_fwid_ext(key.public_key(), other)), False)
              .sign(key, hashes.SHA384()))
    result = verify(raw, [forged, *certs[1:]], nonce)
    assert only_failed(result) == {"gpu.fwid", "gpu.chain", "gpu.signature"}
    fwid = result.checks[2].detail
    assert "differs from " + "00" * 48 in fwid and "GH100 A01 GSP FMC LF" in fwid
    assert "the signature on GH100 A01 GSP FMC LF does not verify with the key of GH100 A01 GSP BROM" in (
        result.checks[3].detail)


def test_chain_mutations_fail_chain(genuine: tuple[bytes, bytes, bytes]) -> None:
    raw, chain, nonce = genuine
    c = parse_chain_pem(chain)
    assert only_failed(verify(raw, [c[0], c[2], c[1], c[3], c[4]], nonce)) == {"gpu.chain"}
    assert only_failed(verify(raw, [c[0], c[1], c[3], c[4]], nonce)) == {"gpu.chain"}
    assert only_failed(verify(raw, [c[0], *c[1:4], gen.make_chain().root], nonce)) == {"gpu.chain"}
    untrusted = verify_gpu_evidence("gpu0", raw, chain, nonce, [gen.make_chain().root], VECTORS_NOW)
    assert only_failed(untrusted) == {"gpu.chain"}
    assert only_failed(verify(raw, c[1:], nonce)) == {"gpu.fwid", "gpu.chain", "gpu.signature"}


def test_unreadable_or_empty_chain(genuine: tuple[bytes, bytes, bytes]) -> None:
    raw, _, nonce = genuine
    for chain in (b"not a chain", []):
        result = verify(raw, chain, nonce)
        assert [c.name for c in result.checks] == NAMES
        assert only_failed(result) == {"gpu.fwid", "gpu.chain", "gpu.signature"}
    assert "unreadable" in verify(raw, b"garbage", nonce).checks[3].detail


def test_naive_now_is_a_usage_error(genuine: tuple[bytes, bytes, bytes]) -> None:
    raw, chain, nonce = genuine
    with pytest.raises(UsageError):
        verify_gpu_evidence("gpu0", raw, b"unreadable", nonce, [device_identity_root()],
                            datetime(2026, 12, 1))  # noqa: DTZ001


def test_trailing_byte_fails_parse(genuine: tuple[bytes, bytes, bytes]) -> None:
    raw, chain, nonce = genuine
    result = verify(raw + b"\0", chain, nonce)
    assert [(c.name, c.ok) for c in result.checks] == [("gpu.parse", False)] and not result.authentic


def test_truncated_at_every_length_fails_parse_typed(genuine: tuple[bytes, bytes, bytes]) -> None:
    raw, chain, nonce = genuine
    certs = parse_chain_pem(chain)
    for cut in range(len(raw)):
        result = verify(raw[:cut], certs, nonce)
        assert len(result.checks) == 1 and not result.checks[0].ok and result.checks[0].name == "gpu.parse"


# --- generated GPUs (the simulator's path) -----------------------------------------------------

def test_round_trip_generated_hopper() -> None:
    chain = gen.make_chain()
    raw = gen.make_report(chain)
    ok = verify_gpu_evidence("gpu3", raw, chain.pem(), gen.REQUEST_NONCE, [chain.root], VECTORS_NOW, simulated=True)
    assert ok.authentic, ok.checks
    assert (ok.arch, ok.chip, ok.ueid, ok.label, ok.simulated) == (GpuArch.HOPPER, "GH100", "1234567", "gpu3", True)
    nvidia = verify_gpu_evidence("gpu3", raw, chain.chain, gen.REQUEST_NONCE, [device_identity_root()], VECTORS_NOW)
    assert only_failed(nvidia) == {"gpu.chain"} and not nvidia.authentic


def test_round_trip_generated_blackwell_and_no_fwid() -> None:
    chain = gen.make_chain(blackwell=True)
    raw = gen.make_report(chain, chip_info=b"GB100\0")
    ok = verify_gpu_evidence("gpu0", raw, chain.chain, gen.REQUEST_NONCE, [chain.root], VECTORS_NOW)
    assert ok.authentic and ok.arch == GpuArch.BLACKWELL and ok.chip == "GB100"
    bare = verify_gpu_evidence("gpu0", gen.make_report(chain, fwid=None), chain.chain, gen.REQUEST_NONCE,
                               [chain.root], VECTORS_NOW)
    assert bare.authentic and bare.checks[2].detail == "not applicable (driver sends no FWID)"


def test_generated_expiry_at_a_pinned_now() -> None:
    start = gen.NOT_BEFORE
    chain = gen.make_chain(not_after=start + gen.days(1))
    raw = gen.make_report(chain)
    assert verify_gpu_evidence("g", raw, chain.chain, gen.REQUEST_NONCE, [chain.root], start + gen.days(0.5)).authentic
    late = verify_gpu_evidence("g", raw, chain.chain, gen.REQUEST_NONCE, [chain.root], start + gen.days(2))
    assert only_failed(late) == {"gpu.chain"} and "is not valid at" in late.checks[3].detail


def test_leaf_key_must_be_p384() -> None:
    root_key, leaf_key = gen.key(), ec.generate_private_key(ec.SECP256R1())
    root = gen.cert("Root", "Root", root_key.public_key(), root_key, ca=True)
    leaf = gen.cert("GH100 A01 GSP FMC LF", "Root", leaf_key.public_key(), root_key, ca=False)
    raw = gen.make_report(gen.make_chain(), fwid=None)
    result = verify_gpu_evidence("g", raw, [leaf, root], gen.REQUEST_NONCE, [root], VECTORS_NOW)
    assert only_failed(result) == {"gpu.signature"} and "not an EC P-384 key" in result.checks[4].detail


def test_report_signed_by_another_gpu() -> None:
    ours, theirs = gen.make_chain(), gen.make_chain()
    result = verify_gpu_evidence("g", gen.make_report(theirs), ours.chain, gen.REQUEST_NONCE, [ours.root],
                                 VECTORS_NOW)
    assert only_failed(result) == {"gpu.signature"}
