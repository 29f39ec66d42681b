"""The device chain: loading, the leaf's FWID/chip/UEID, the pinned root, gpu.chain."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from ratls import der
from ratls.errors import EvidenceError, UsageError
from ratls.platforms.nvidia.certs import (
    DEVICE_IDENTITY_ROOT_SHA256,
    MAX_CHAIN_LEN,
    OID_DICE_TCB_INFO,
    OID_HOPPER_FWID,
    arch_of,
    chip_name,
    device_identity_root,
    device_roots,
    dice_tcb_fwid,
    hopper_fwid,
    hwmodel,
    leaf_fwid,
    parse_chain_pem,
    ueid,
    verify_chain,
)
from ratls.platforms.nvidia.types import GpuArch

from . import gen
from .conftest import VECTORS_NOW

CASE1 = "hopper_trustee/hopper_cert_chain_case1.txt"
GB100 = "nvidia-attestation-sdk/gb100_575.32/blackwellCertChain.txt"
# chain file -> (gpu.chain ok, words the detail must contain)
CHAINS = {
    CASE1: (True, "GH100 A01 GSP FMC LF <- GH100 A01 GSP BROM"),
    "hopper_trustee/hopper_cert_chain_case2.txt": (False, "holds only the root"),
    "hopper_trustee/hopper_cert_chain_case3.txt": (False, "GH100 A01 GSP BROM names issuer NVIDIA GH100 "
                                                          "Provisioner ICA 1 but is followed by NVIDIA GH100 Identity"),
    "hopper_trustee/hopper_cert_chain_case4.txt": (False, "GH100 A01 GSP BROM, is a CA, not the GPU's signing leaf"),
    "hopper_trustee/hopper_coco_certs1.txt": (True, "NVIDIA Device Identity CA (pinned root)"),
    "go-nvtrust/gpuAkCertChain.txt": (True, "NVIDIA GH100 Identity <- NVIDIA Device Identity CA"),
    "go-nvtrust/invalidCertChain.txt": (False, "GH100 A01 GSP FMC LF names issuer GH100 A01 GSP BROM"),
    "nvidia-attestation-sdk/hopper_580.159.03/hopperCertChain.txt": (True, "GH100 A01 GSP FMC LF"),
    "nvidia-attestation-sdk/hopper_535.86.09/hopperCertChain.txt": (True, "GH100 A01 GSP FMC LF"),
    "nvidia-attestation-sdk/hopper_570.124.03/hopperCertChainExpired.txt": (True, "GH100 A01 GSP FMC LF"),
    GB100: (True, "GB100 A01 GSP FMC LF <- GB100 A01 GSP BROM <- NVIDIA GB100 Provisioner ICA"),
}


def chain_of(nvidia_vectors: Path, rel: str) -> list[x509.Certificate]:
    return parse_chain_pem((nvidia_vectors / rel).read_bytes())


def pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


@pytest.fixture(scope="module")
def generated() -> gen.GenChain:
    return gen.make_chain()


# --- the pinned root ---------------------------------------------------------------------------

def test_shipped_root_matches_its_pin() -> None:
    root = device_identity_root()
    assert hashlib.sha256(root.public_bytes(Encoding.DER)).hexdigest() == DEVICE_IDENTITY_ROOT_SHA256
    assert root is device_identity_root()  # loaded once
    assert device_roots() == [root]
    root.verify_directly_issued_by(root)
    assert root.subject.rfc4514_string() == "O=NVIDIA,CN=NVIDIA Device Identity CA"


def test_shipped_root_is_the_root_vendors_ship(nvidia_vectors: Path) -> None:
    for rel in ("hopper_trustee/nvidia_device_root.pem", "nv-local-gpu-verifier-2.7.3/verifier_device_root.pem"):
        assert parse_chain_pem((nvidia_vectors / rel).read_bytes()) == [device_identity_root()]
    for rel in CHAINS:
        assert chain_of(nvidia_vectors, rel)[-1] == device_identity_root()


# --- loading -----------------------------------------------------------------------------------

def test_parse_chain_pem_counts_and_order(nvidia_vectors: Path) -> None:
    chain = chain_of(nvidia_vectors, CASE1)
    assert [c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value for c in chain] == [
        "GH100 A01 GSP FMC LF", "GH100 A01 GSP BROM", "NVIDIA GH100 Provisioner ICA 1", "NVIDIA GH100 Identity",
        "NVIDIA Device Identity CA"]
    assert len(chain_of(nvidia_vectors, "hopper_trustee/hopper_cert_chain_case2.txt")) == 1


def test_parse_chain_pem_refusals(nvidia_vectors: Path, generated: gen.GenChain) -> None:
    one = generated.leaf.public_bytes(Encoding.PEM)
    body = one.split(b"\n")
    broken = b"\n".join(body[:3] + [b"!!!!" + body[3][4:]] + body[4:])
    for data, match in [(b"", "no PEM"), (b"hello", "no PEM"), (one * (MAX_CHAIN_LEN + 1), "refusing more than 8"),
                        (b"x" * (300 * 1024), "refusing anything over"), (broken, "not readable PEM"),
                        (one.replace(b"-----END CERTIFICATE-----", b""), "not readable PEM")]:
        with pytest.raises(EvidenceError, match=match):
            parse_chain_pem(data)
    with pytest.raises(EvidenceError):
        parse_chain_pem("text")  # type: ignore[arg-type]
    assert parse_chain_pem(b"junk before\n" + one * MAX_CHAIN_LEN + b"junk after") == [generated.leaf] * 8


# --- what the certificates say -----------------------------------------------------------------

def test_leaf_fwid_of_vectors(nvidia_vectors: Path) -> None:
    hopper = chain_of(nvidia_vectors, CASE1)
    fwid, arch = leaf_fwid(hopper[0])
    assert arch == GpuArch.HOPPER and fwid is not None and fwid.hex().startswith("f5c384aebb579217")
    raw = hopper[0].extensions.get_extension_for_oid(x509.ObjectIdentifier(OID_HOPPER_FWID)).value.value
    assert fwid == raw[-48:]  # what NVIDIA takes
    fwid, arch = leaf_fwid(chain_of(nvidia_vectors, GB100)[0])
    assert arch == GpuArch.BLACKWELL and fwid is not None and fwid.hex().startswith("d090cab1b6e6ffdd")
    assert [leaf_fwid(c) for c in hopper[1:]] == [(None, None)] * 4


def test_identity_of_vectors(nvidia_vectors: Path) -> None:
    hopper, blackwell = chain_of(nvidia_vectors, CASE1), chain_of(nvidia_vectors, GB100)
    assert (chip_name(hopper), chip_name(blackwell)) == ("GH100", "GB100")
    assert (arch_of("GH100"), arch_of("GB202"), arch_of(None, GpuArch.HOPPER), arch_of("XY1")) == (
        GpuArch.HOPPER, GpuArch.BLACKWELL, GpuArch.HOPPER, None)
    assert ueid(hopper[0]) == str(hopper[0].serial_number) == "478176379286082186618948445787393647364802107249"
    assert (hwmodel(hopper), hwmodel(blackwell), hwmodel(hopper[:1])) == ("GH100 A01 GSP BROM",
                                                                         "GB100 A01 GSP BROM", None)
    # without the leaf the chip still comes from the Identity CA's name
    assert chip_name(hopper[2:]) == "GH100" and chip_name([]) is None and chip_name(hopper[-1:]) is None
    # the chip word may follow a prefix ("SIMULATED GH100 A01 GSP FMC LF")
    k = gen.key()
    assert chip_name([gen.cert("SIMULATED GB202 A01 GSP FMC LF", "x", k.public_key(), k, ca=False)]) == "GB202"


def test_generated_fwid_extensions(generated: gen.GenChain) -> None:
    assert leaf_fwid(generated.leaf) == (gen.FWID, GpuArch.HOPPER)
    assert leaf_fwid(gen.make_chain(blackwell=True).leaf) == (gen.FWID, GpuArch.BLACKWELL)
    both = gen.cert("GH100 A01 GSP FMC LF", "x", generated.leaf_key.public_key(), generated.root_key, ca=False,
                    ext=(OID_HOPPER_FWID, gen.hopper_fwid_ext(generated.leaf_key.public_key(), gen.FWID)))
    assert leaf_fwid(both)[0] == gen.FWID
    assert dice_tcb_fwid(der.encode(0x30, der.encode(0x80, b"v"))) is None


@pytest.mark.parametrize("value, match", [
    (b"", "truncated"),
    (der.encode(0x30, b""), "empty"),
    (der.encode(0x30, der.encode(0x02, b"\x01")), "not SEQUENCE"),
    (der.encode(0x30, der.encode(0x02, b"\x01") + der.encode(0x30, b"\x05\x00")
                + der.encode(0x30, der.encode(0x06, bytes.fromhex("608648016503040201"))
                             + der.encode_octet_string(bytes(48)))), "not SHA-384"),
    (der.encode(0x30, der.encode(0x02, b"\x01") + der.encode(0x30, b"\x05\x00") + gen.fwid_der(bytes(32))),
     "32 bytes, expected 48"),
    (der.encode(0x30, der.encode(0x02, b"\x01") + der.encode(0x30, b"\x05\x00") + gen.fwid_der(bytes(48))) + b"\0",
     "trailing"),
    (der.encode(0x30, der.encode(0x02, b"\x01") + der.encode(0x30, b"\x05\x00")
                + der.encode(0x30, der.encode_octet_string(bytes(48)))), "not SEQUENCE \\{OID, OCTET STRING\\}"),
])
def test_malformed_hopper_fwid_extension(value: bytes, match: str) -> None:
    with pytest.raises(EvidenceError, match=match):
        hopper_fwid(value)


@pytest.mark.parametrize("value, match", [
    (der.encode(0x30, der.encode(0x81, b"m") + der.encode(0x80, b"v")), "increasing order"),
    (der.encode(0x30, der.encode(0x80, b"v") + der.encode(0x80, b"v")), "increasing order"),
    (der.encode(0x30, der.encode(0x04, b"v")), "context-tagged"),
    (der.encode(0x30, der.encode(0xA6, der.encode(0x04, bytes(48)))), "not a SEQUENCE"),
    (der.encode(0x30, der.encode(0xA6, b"")), "empty"),
])
def test_malformed_dice_tcb_info(value: bytes, match: str) -> None:
    with pytest.raises(EvidenceError, match=match):
        dice_tcb_fwid(value)


def test_leaf_with_a_malformed_extension_is_a_typed_error(generated: gen.GenChain) -> None:
    bad = gen.cert("GH100 A01 GSP FMC LF", "x", generated.leaf_key.public_key(), generated.root_key, ca=False,
                   ext=(OID_DICE_TCB_INFO, der.encode(0x30, der.encode(0x04, b"v"))))
    with pytest.raises(EvidenceError, match="DiceTcbInfo"):
        leaf_fwid(bad)


# --- gpu.chain on the vectors ------------------------------------------------------------------

@pytest.mark.parametrize("rel", sorted(CHAINS))
def test_vector_chains(nvidia_vectors: Path, rel: str) -> None:
    ok, words = CHAINS[rel]
    check = verify_chain(chain_of(nvidia_vectors, rel), [device_identity_root()], VECTORS_NOW)
    assert check.name == "gpu.chain" and check.ok is ok and words in check.detail, check.detail


def test_chain_without_its_root_anchors_at_the_pinned_root(nvidia_vectors: Path) -> None:
    chain = chain_of(nvidia_vectors, CASE1)[:-1]
    assert verify_chain(chain, [device_identity_root()], VECTORS_NOW).ok


# --- gpu.chain mutations -----------------------------------------------------------------------

def _fails(chain: list[x509.Certificate], words: str, roots: list[x509.Certificate] | None = None,
           now: datetime = VECTORS_NOW) -> None:
    check = verify_chain(chain, [device_identity_root()] if roots is None else roots, now)
    assert check.name == "gpu.chain" and not check.ok and words in check.detail, check.detail


def test_swapped_missing_and_reordered_certificates(nvidia_vectors: Path) -> None:
    c = chain_of(nvidia_vectors, CASE1)
    _fails([c[1], c[0], *c[2:]], "GH100 A01 GSP BROM, is a CA")
    _fails([c[0], c[2], c[1], *c[3:]], "GH100 A01 GSP FMC LF names issuer GH100 A01 GSP BROM but is followed by "
                                       "NVIDIA GH100 Provisioner ICA 1")
    _fails([c[0], c[1], c[3], c[2], c[4]], "NVIDIA GH100 Provisioner ICA 1 but is followed by NVIDIA GH100 Identity")
    _fails(c[::-1], "self-issued certificate NVIDIA Device Identity CA inside the chain")
    _fails([c[0], c[1], c[2], c[4]], "NVIDIA GH100 Provisioner ICA 1 is issued by NVIDIA GH100 Identity, which is "
                                     "not a pinned root")
    _fails([c[0], c[1], c[2]], "NVIDIA GH100 Provisioner ICA 1 is issued by NVIDIA GH100 Identity, which is not a "
                               "pinned root")
    _fails([c[0]], "GH100 A01 GSP FMC LF is issued by GH100 A01 GSP BROM, which is not a pinned root")
    _fails([], "empty")
    _fails([*c, c[4]], "self-issued certificate NVIDIA Device Identity CA inside the chain")  # the root twice
    _fails([c[0], c[4], *c[1:]], "self-issued certificate NVIDIA Device Identity CA inside the chain")


def test_another_devices_leaf_under_this_chain(nvidia_vectors: Path) -> None:
    ours, theirs = chain_of(nvidia_vectors, CASE1), chain_of(nvidia_vectors, "hopper_trustee/hopper_coco_certs1.txt")
    _fails([theirs[0], *ours[1:]], "GH100 A01 GSP FMC LF names issuer GH100 A01 GSP BROM but is followed by "
                                   "GH100 A01 GSP BROM")  # same CN, different BROM serial in the name


def test_untrusted_roots(nvidia_vectors: Path, generated: gen.GenChain) -> None:
    c = chain_of(nvidia_vectors, CASE1)
    _fails([*c[:-1], generated.root], "ends in root Generated Device Identity CA")
    _fails(c, "is not a pinned root", roots=[generated.root])
    _fails(generated.chain, "ends in root Generated Device Identity CA")
    _fails(generated.chain[:1], "issued by Generated Device Identity CA, which is not a pinned root")
    _fails(c, "no pinned root", roots=[])
    # a forged root with NVIDIA's name, appended or trusted, changes nothing
    forged = gen.key()
    nvidia = device_identity_root().subject
    fake_root = (x509.CertificateBuilder().subject_name(nvidia).issuer_name(nvidia).public_key(forged.public_key())
                 .serial_number(1).not_valid_before(gen.NOT_BEFORE).not_valid_after(gen.FOREVER)
                 .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                 .sign(forged, hashes.SHA384()))
    _fails([*c[:-1], fake_root], "ends in root NVIDIA Device Identity CA")
    _fails(c[:-1], "the signature on NVIDIA GH100 Identity does not verify with the key of the pinned root NVIDIA "
                   "Device Identity CA", roots=[fake_root])


def test_generated_chain_with_its_own_root(generated: gen.GenChain) -> None:
    assert verify_chain(generated.chain, [generated.root], VECTORS_NOW).ok
    assert verify_chain(generated.chain[:1], [generated.root], VECTORS_NOW).ok
    assert verify_chain(generated.chain, [device_identity_root(), generated.root], VECTORS_NOW).ok


def test_too_long_chain(generated: gen.GenChain) -> None:
    _fails([generated.leaf] * (MAX_CHAIN_LEN + 1), "at most 8", roots=[generated.root])


def test_expiry_at_a_pinned_now() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    short = gen.make_chain(not_before=start, not_after=start + gen.days(1))
    assert verify_chain(short.chain, [short.root], start + gen.days(0.5)).ok
    after = verify_chain(short.chain, [short.root], start + gen.days(2))
    assert not after.ok and "is not valid at 2030-01-03T00:00:00+00:00" in after.detail
    before = verify_chain(short.chain, [short.root], start - gen.days(1))
    assert not before.ok and "GH100 A01 GSP FMC LF is not valid at 2029-12-31" in before.detail
    # only the leaf expired: it is the one named
    root_key, leaf_key = gen.key(), gen.key()
    root = gen.cert("Long Root", "Long Root", root_key.public_key(), root_key, ca=True)
    leaf = gen.cert("GH100 A01 GSP FMC LF", "Long Root", leaf_key.public_key(), root_key, ca=False,
                    not_before=start, not_after=start + gen.days(1))
    check = verify_chain([leaf, root], [root], start + gen.days(2))
    assert not check.ok and check.detail.startswith("GH100 A01 GSP FMC LF is not valid")


def test_naive_now_is_a_usage_error(generated: gen.GenChain) -> None:
    with pytest.raises(UsageError):
        verify_chain(generated.chain, [generated.root], datetime(2030, 1, 1))  # noqa: DTZ001


def test_issuer_must_be_a_ca_that_may_sign() -> None:
    root_key, mid_key, leaf_key = gen.key(), gen.key(), gen.key()
    root = gen.cert("Root", "Root", root_key.public_key(), root_key, ca=True)
    not_ca = gen.cert("Mid", "Root", mid_key.public_key(), root_key, ca=False)
    leaf = gen.cert("GH100 A01 GSP FMC LF", "Mid", leaf_key.public_key(), mid_key, ca=False)
    _fails([leaf, not_ca, root], "Mid issues GH100 A01 GSP FMC LF but is not a CA", roots=[root])
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    no_sign = (x509.CertificateBuilder().subject_name(gen.name("Mid")).issuer_name(gen.name("Root"))
               .public_key(mid_key.public_key()).serial_number(5).not_valid_before(gen.NOT_BEFORE)
               .not_valid_after(gen.FOREVER).add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
               .add_extension(usage, True).sign(root_key, hashes.SHA384()))
    _fails([leaf, no_sign, root], "Mid may not sign certificates", roots=[root])
    zero = (x509.CertificateBuilder().subject_name(gen.name("Root")).issuer_name(gen.name("Root"))
            .public_key(root_key.public_key()).serial_number(6).not_valid_before(gen.NOT_BEFORE)
            .not_valid_after(gen.FOREVER).add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
            .sign(root_key, hashes.SHA384()))
    mid = gen.cert("Mid", "Root", mid_key.public_key(), root_key, ca=True)
    _fails([leaf, mid, zero], "Root allows 0 CA(s) below it; the chain has 1", roots=[zero])
    assert verify_chain([mid, zero], [zero], VECTORS_NOW).ok is False  # mid is a CA: not a signing leaf


def test_leaf_signed_by_the_wrong_key(generated: gen.GenChain) -> None:
    forged = gen.cert("GH100 A01 GSP FMC LF", "Generated Device Identity CA", generated.leaf_key.public_key(),
                      gen.key(), ca=False)
    _fails([forged, generated.root], "the signature on GH100 A01 GSP FMC LF does not verify with the key of the "
                                     "pinned root Generated Device Identity CA", roots=[generated.root])
    mid_key = gen.key()
    mid = gen.cert("Mid", "Generated Device Identity CA", mid_key.public_key(), generated.root_key, ca=True)
    leaf = gen.cert("GH100 A01 GSP FMC LF", "Mid", generated.leaf_key.public_key(), gen.key(), ca=False)
    _fails([leaf, mid, generated.root], "the signature on GH100 A01 GSP FMC LF does not verify with the key of Mid",
           roots=[generated.root])
