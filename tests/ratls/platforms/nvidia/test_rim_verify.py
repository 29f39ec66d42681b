"""verify_rim: every RIM line of EXPECTED_RESULTS.txt, mutations refused by the check named for
them, signature wrapping and algorithm substitution refused, and the chain rules."""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from signxml import XMLSigner, XMLVerifier
from signxml.algorithms import DigestAlgorithm, SignatureMethod

from ratls.platforms.nvidia.rim import SWID_NS, parse_rim
from ratls.platforms.nvidia.rim_verify import RIM_ROOT_SHA256, shipped_rim_root, verify_chain, verify_rim
from ratls.platforms.nvidia.types import RimKind, VerifiedRim

from .rim_testlib import (
    DRIVER_TEST,
    LOCAL_RIMS,
    SDK_RIMS,
    SWIDTAGS,
    T_2024,
    T_2025,
    T_NOW,
    VBIOS_TEST,
    digest,
    replace_once,
    sim_signer,
)

ROOT = shipped_rim_root()


def verify(xml: bytes, now: datetime = T_2024, *, roots: list[x509.Certificate] | None = None,
           version: str | None = None, product: str | None = None, kind: RimKind = RimKind.DRIVER) -> VerifiedRim:
    return verify_rim(xml, kind, roots if roots is not None else [ROOT], now,
                      expected_version=version, expected_product=product)


def failures(result: VerifiedRim) -> set[str]:
    return {c.name.rsplit(".", 1)[1] for c in result.checks if not c.ok}


def detail(result: VerifiedRim, check: str) -> str:
    return next(c.detail for c in result.checks if c.name.endswith(f".{check}"))


@pytest.fixture(scope="module")
def driver_xml(nvidia_vectors: Path) -> bytes:
    return (nvidia_vectors / DRIVER_TEST).read_bytes()


# --- the pinned root -------------------------------------------------------------------------------------------------

def test_shipped_root_matches_pin_and_vectors(nvidia_vectors: Path) -> None:
    assert hashlib.sha256(ROOT.public_bytes(Encoding.DER)).hexdigest() == RIM_ROOT_SHA256
    for name in ("nv-local-gpu-verifier-2.7.3/verifier_RIM_root.pem", f"{SDK_RIMS}/rim_root.crt"):
        assert x509.load_pem_x509_certificate((nvidia_vectors / name).read_bytes()) == ROOT


# --- EXPECTED_RESULTS.txt, "nvidia RIM files" ------------------------------------------------------------------------

@pytest.mark.parametrize("name", SWIDTAGS)
def test_swidtags_valid_at_2024_06_01(nvidia_vectors: Path, name: str) -> None:
    xml = (nvidia_vectors / LOCAL_RIMS / f"{name}.swidtag").read_bytes()
    kind = RimKind.DRIVER if name.startswith("Driver") else RimKind.VBIOS
    result = verify(xml, T_2024, version=parse_rim(xml).version.lower(), product="GH100", kind=kind)
    assert result.ok, result.checks
    assert [c.name for c in result.checks] == [f"gpu.{kind}-rim.{n}" for n in
                                                ("parse", "chain", "signature", "version", "product")]
    assert result.rim is not None and len(result.rim.measurements) == 64


@pytest.mark.parametrize("name", SWIDTAGS)
def test_swidtags_fail_on_chain_at_2026_12_01(nvidia_vectors: Path, name: str) -> None:
    result = verify((nvidia_vectors / LOCAL_RIMS / f"{name}.swidtag").read_bytes(), T_NOW)
    assert not result.ok and result.rim is None
    assert failures(result) == {"chain"}  # the signature itself is fine; only time ended it
    assert "is not valid at 2026-12-01" in detail(result, "chain")


@pytest.mark.parametrize(("name", "now", "failed"), [
    ("NV_GPU_DRIVER_GH100_535.86.09_measurement_mismatch.xml", T_2025, {"signature"}),
    ("NV_GPU_DRIVER_GH100_535.86.09_measurement_mismatch.xml", T_NOW, {"signature"}),
    ("NV_GPU_DRIVER_GH100_550.144.03.xml", T_2025, set()),
    ("NV_GPU_DRIVER_GH100_550.144.03.xml", T_NOW, set()),
    ("NV_GPU_DRIVER_GH100_570.124.03_expired.xml", T_2025, {"chain", "signature"}),
    ("NV_GPU_DRIVER_GH100_570.124.03_expired.xml", T_NOW, {"chain", "signature"}),
    ("NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml", T_2025, set()),
    ("NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml", T_NOW, {"chain"}),
    ("incorrect_cert_chain_driver_rim.xml", T_2025, {"chain"}),
    ("incorrect_cert_chain_driver_rim.xml", T_NOW, {"chain"}),
    ("incorrect_signature_driver_rim.xml", T_2025, {"signature"}),
    ("incorrect_signature_driver_rim.xml", T_NOW, {"signature"}),
])
def test_sdk_rims(nvidia_vectors: Path, name: str, now: datetime, failed: set[str]) -> None:
    result = verify((nvidia_vectors / SDK_RIMS / name).read_bytes(), now)
    assert failures(result) == failed
    assert result.ok == (not failed) and (result.rim is not None) == (not failed)
    if "mismatch" in name and "DRIVER" in name or "expired" in name:
        assert "Digest mismatch" in detail(result, "signature")  # edited after signing
    if "incorrect_signature" in name:
        assert "Signature verification failed" in detail(result, "signature")
    if "incorrect_cert_chain" in name:
        assert "Debug Only" in detail(result, "chain")
    if "expired" in name:
        assert "RIM L4 Signer is not valid" in detail(result, "chain")


def test_incorrect_rim_root_is_not_a_root(nvidia_vectors: Path, driver_xml: bytes) -> None:
    wrong = x509.load_pem_x509_certificate((nvidia_vectors / SDK_RIMS / "incorrect_rim_root.crt").read_bytes())
    result = verify(driver_xml, roots=[wrong])
    assert failures(result) == {"chain"} and result.rim is None
    assert "not a trusted RIM root" in detail(result, "chain")


# --- mutations, each refused by the check named for it ----------------------------------------------------------------

INDEX7 = b"0e0ee161b59bf124ce6b6dca6efa7616d28077862c0e57dca7d5efd63d00eeed4851922941e846a38c464cbedbc168d9"


def test_changed_measurement_fails_the_digest(driver_xml: bytes) -> None:
    result = verify(replace_once(driver_xml, INDEX7, b"1" + INDEX7[1:]))
    assert failures(result) == {"signature"} and result.rim is None
    assert "Digest mismatch" in detail(result, "signature")


def test_changed_signature_value(driver_xml: bytes) -> None:
    start = driver_xml.index(b"<ds:SignatureValue>") + len(b"<ds:SignatureValue>")
    flipped = b"A" if driver_xml[start + 5:start + 6] != b"A" else b"B"
    result = verify(driver_xml[:start + 5] + flipped + driver_xml[start + 6:])
    assert failures(result) == {"signature"} and result.rim is None


def test_chain_certificate_removed(driver_xml: bytes) -> None:
    certs = driver_xml.split(b"<ds:X509Certificate>")
    second = b"<ds:X509Certificate>" + certs[2].split(b"</ds:X509Certificate>")[0] + b"</ds:X509Certificate>"
    result = verify(replace_once(driver_xml, second, b""))
    assert failures(result) == {"chain"} and result.rim is None
    assert "not signed by NVIDIA Reference Value GH100 CA" in detail(result, "chain")


def test_only_the_in_document_root_is_no_trust(driver_xml: bytes) -> None:
    result = verify(driver_xml, roots=[sim_signer().root])
    assert failures(result) == {"chain"}
    assert verify(driver_xml, roots=[sim_signer().root, ROOT]).ok
    assert failures(verify(driver_xml, roots=[])) == {"chain"}


def test_version_and_product(driver_xml: bytes, nvidia_vectors: Path) -> None:
    assert verify(driver_xml, version="545.00", product="GH100").ok
    wrong = verify(driver_xml, version="550.90.07", product="GH100")
    assert failures(wrong) == {"version"} and "545.00" in detail(wrong, "version") and wrong.rim is not None
    wrong = verify(driver_xml, version="545.00", product="GB100")
    assert failures(wrong) == {"product"}
    vbios = (nvidia_vectors / VBIOS_TEST).read_bytes()
    assert verify(vbios, version="96.00.5e.00.01", kind=RimKind.VBIOS).ok  # case-insensitive, as NVIDIA compares
    assert failures(verify(vbios, version="96.00.5e.00.02", kind=RimKind.VBIOS)) == {"version"}


def test_expiry_at_pinned_times(driver_xml: bytes) -> None:
    signer = parse_rim(driver_xml).signer_chain[0]
    end, start = signer.not_valid_after_utc, signer.not_valid_before_utc
    assert verify(driver_xml, end).ok and verify(driver_xml, start).ok
    assert failures(verify(driver_xml, end + timedelta(seconds=1))) == {"chain"}
    assert failures(verify(driver_xml, start - timedelta(seconds=1))) == {"chain"}


def test_naive_time_is_utc(driver_xml: bytes) -> None:
    assert verify(driver_xml, datetime(2024, 6, 1)).ok


# --- signature wrapping, algorithm substitution, comments and whitespace ---------------------------------------------

SIGNATURE_START = b'<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">'


def signature_of(xml: bytes) -> bytes:
    return xml[xml.index(SIGNATURE_START):xml.index(b"</ds:Signature>") + len(b"</ds:Signature>")]


def refused(xml: bytes, message: str) -> None:
    result = verify(xml)
    assert result.rim is None and not result.ok
    assert "signature" in failures(result), result.checks
    assert message in detail(result, "signature"), detail(result, "signature")


def test_second_signature_is_refused(driver_xml: bytes) -> None:
    sig = signature_of(driver_xml)
    refused(replace_once(driver_xml, b"</ns0:Payload>", sig + b"</ns0:Payload>"), "2 ds:Signature elements")
    refused(replace_once(driver_xml, b"</SoftwareIdentity>", sig + b"</SoftwareIdentity>"), "2 ds:Signature")


def test_reference_to_an_id_is_refused(driver_xml: bytes) -> None:
    xml = replace_once(driver_xml, b'<ds:Reference URI="">', b'<ds:Reference URI="#x">')
    refused(replace_once(xml, b"<ns0:Payload ", b'<ns0:Payload Id="x" '), 'exactly URI=""')
    refused(replace_once(driver_xml, b'<ds:Reference URI="">', b'<ds:Reference URI="" Id="r">'), 'exactly URI=""')
    refused(replace_once(driver_xml, b'<ds:Reference URI="">', b"<ds:Reference>"), 'exactly URI=""')


def test_extra_reference_is_refused(driver_xml: bytes) -> None:
    ref = driver_xml[driver_xml.index(b"<ds:Reference "):driver_xml.index(b"</ds:Reference>") + 15]
    refused(replace_once(driver_xml, ref, ref + ref), "'Reference', 'Reference']")


def test_object_and_payload_inside_the_signature_are_refused(driver_xml: bytes) -> None:
    payload = driver_xml[driver_xml.index(b"<ns0:Payload"):driver_xml.index(b"</ns0:Payload>") + 14]
    forged = payload.replace(INDEX7, b"ff" * 48)
    for inside in (b"<ds:Object>" + forged + b"</ds:Object>", forged):
        refused(replace_once(driver_xml, b"</ds:KeyInfo>", b"</ds:KeyInfo>" + inside), "ds:Signature has children")
    # ...and inside KeyInfo, the other unsigned place
    refused(replace_once(driver_xml, b"</ds:X509Data>", b"</ds:X509Data>" + forged), "ds:KeyInfo has children")


def test_signature_must_be_a_child_of_the_root(driver_xml: bytes) -> None:
    sig = signature_of(driver_xml)
    moved = replace_once(driver_xml, sig, b"")
    refused(replace_once(moved, b"</ns0:Payload>", sig + b"</ns0:Payload>"), "not a child of the document's root")
    refused(moved, "0 ds:Signature elements")


@pytest.mark.parametrize(("old", "new", "message"), [
    (b"xmldsig-more#ecdsa-sha384", b"xmldsig-more#ecdsa-sha256", "SignatureMethod Algorithm"),
    (b"xmldsig-more#ecdsa-sha384", b"xmldsig-more#rsa-sha256", "SignatureMethod Algorithm"),
    (b'<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2006/12/xml-c14n11"/>',
     b'<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>', "CanonicalizationMethod"),
    (b'<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#sha384"/>',
     b'<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>', "DigestMethod"),
    (b'<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>', b"",
     "Transforms has children ['Transform']"),
    (b'<ds:Transform Algorithm="http://www.w3.org/2006/12/xml-c14n11"/>',
     b'<ds:Transform Algorithm="http://www.w3.org/2006/12/xml-c14n11#WithComments"/>', "Transform Algorithm"),
    (b'<ds:Transform Algorithm="http://www.w3.org/2006/12/xml-c14n11"/>',
     b'<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116"><ds:XPath>1</ds:XPath></ds:Transform>',
     "Transform Algorithm"),
    (b"<ds:KeyInfo>", b"<ds:KeyInfo><ds:KeyName>k</ds:KeyName>", "KeyInfo has children"),
    (b"</ds:X509Data>", b"<ds:X509SubjectName>CN=x</ds:X509SubjectName></ds:X509Data>", "X509Certificate elements"),
])
def test_other_algorithms_and_key_info_are_refused(driver_xml: bytes, old: bytes, new: bytes, message: str) -> None:
    refused(replace_once(driver_xml, old, new), message)


def test_comment_inside_the_signature_is_refused(driver_xml: bytes) -> None:
    start = driver_xml.index(b"<ds:SignatureValue>") + len(b"<ds:SignatureValue>")
    refused(driver_xml[:start + 8] + b"<!---->" + driver_xml[start + 8:], "comment")
    start = driver_xml.index(b"<ds:DigestValue>") + len(b"<ds:DigestValue>")
    refused(driver_xml[:start + 8] + b"<!---->" + driver_xml[start + 8:], "comment")


def test_comment_in_the_signed_part_changes_nothing(driver_xml: bytes) -> None:
    # C14N 1.1 without comments drops them: the document is still the signed one, values unchanged.
    result = verify(replace_once(driver_xml, b"</ns0:Payload>", b"<!-- injected --></ns0:Payload>"))
    assert result.ok and result.rim is not None
    assert result.rim.measurements == parse_rim(driver_xml).measurements


def test_whitespace_in_the_signed_part_fails_the_digest(driver_xml: bytes) -> None:
    result = verify(replace_once(driver_xml, b"</ns0:Payload>", b" </ns0:Payload>"))
    assert failures(result) == {"signature"} and "Digest mismatch" in detail(result, "signature")


# --- wrapping that signxml alone would accept, on the simulator's key -----------------------------------------------

def sim_verify(xml: bytes) -> VerifiedRim:
    return verify(xml, T_NOW, roots=[sim_signer().root])


def unsigned_sim_rim(measurements: dict[int, tuple[bool, tuple[bytes, ...]]]) -> etree._Element:
    root = etree.fromstring(sim_signer().sign(measurements), etree.XMLParser(resolve_entities=False, no_network=True))
    root.remove(root[-1])  # drop the simulator's own Signature: the tests re-sign in other shapes
    return root


def sim_sign(root: etree._Element, *, reference_uri: str | None = None,
             method: SignatureMethod = SignatureMethod.ECDSA_SHA384) -> bytes:
    signer = XMLSigner(signature_algorithm=method, digest_algorithm=DigestAlgorithm.SHA384)
    return etree.tostring(signer.sign(root, key=sim_signer().key, cert=list(sim_signer().chain),
                                      reference_uri=reference_uri))


def payload_bytes(xml: bytes) -> bytes:
    return xml[xml.index(b"<ns0:Payload"):xml.index(b"</ns0:Payload>") + len(b"</ns0:Payload>")]


def test_id_reference_wrapping_signxml_accepts_and_we_refuse() -> None:
    root = unsigned_sim_rim({7: (True, (digest(7),))})
    root.find(f"{{{SWID_NS}}}Payload").set("Id", "p")
    xml = sim_sign(root, reference_uri="#p")  # signs the Payload only, by its Id
    genuine = payload_bytes(xml)
    forged = genuine.replace(b' Id="p"', b"").replace(digest(7).hex().encode(), digest(9).hex().encode())
    # The signed Payload moves aside; a forged one takes its place, where a careless reader looks.
    wrapped = replace_once(xml, genuine, forged + b"<ns0:Extra>" + genuine + b"</ns0:Extra>")
    leaf = sim_signer().chain[0]
    for document in (xml, wrapped):
        assert XMLVerifier().verify(document, x509_cert=leaf).signed_xml is not None  # signxml: "valid"
        result = sim_verify(document)
        assert failures(result) == {"signature"} and 'URI=""' in detail(result, "signature")
        assert result.rim is None


def test_two_payloads_signed_together_are_refused_by_parse() -> None:
    root = unsigned_sim_rim({7: (True, (digest(7),))})
    second = copy.deepcopy(root.find(f"{{{SWID_NS}}}Payload"))
    root.append(second)
    result = sim_verify(sim_sign(root))
    assert failures(result) == {"parse"} and "2 Payload elements" in detail(result, "parse")
    assert result.rim is None


def test_sim_signed_with_another_algorithm_is_refused() -> None:
    result = sim_verify(sim_sign(unsigned_sim_rim({7: (True, (digest(7),))}), method=SignatureMethod.ECDSA_SHA256))
    assert failures(result) == {"signature"} and "ecdsa-sha384 is accepted" in detail(result, "signature")


def test_parse_failures_are_a_check() -> None:
    result = verify(b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')
    assert [c.name for c in result.checks] == ["gpu.driver-rim.parse"] and not result.ok
    assert "DOCTYPE" in result.checks[0].detail
    assert verify(b"not xml", kind=RimKind.VBIOS).checks[0].name == "gpu.vbios-rim.parse"


# --- chain rules ------------------------------------------------------------------------------------------------------

def make_cert(cn: str, issuer: tuple[ec.EllipticCurvePrivateKey, x509.Name] | None = None, *, ca: bool | None = True,
              path_length: int | None = None, usage: str | None = None,
              days: tuple[int, int] = (-10, 10)) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    issuer_key, issuer_name = issuer or (key, name)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(T_NOW + timedelta(days=days[0])).not_valid_after(T_NOW + timedelta(days=days[1])))
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), True)
    if usage is not None:
        flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                               "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
        flags[usage] = True
        builder = builder.add_extension(x509.KeyUsage(**flags), True)
    return key, builder.sign(issuer_key, hashes.SHA384())


def chain_check(chain: list[x509.Certificate], roots: list[x509.Certificate]) -> tuple[bool, str]:
    check = verify_chain(chain, roots, T_NOW, "t.chain")
    return check.ok, check.detail


def test_chain_rules() -> None:
    root_key, root = make_cert("root")
    ca_key, ca = make_cert("ca", (root_key, root.subject), path_length=0)
    _, leaf = make_cert("leaf", (ca_key, ca.subject), ca=False)
    assert chain_check([leaf, ca], [root])[0]
    assert chain_check([leaf, ca, root], [root])[0]  # the in-document root copy is ignored
    other_root = make_cert("other root")[1]
    # anything after the root copy, even another self-signed root, is refused: nothing is ignored
    assert "not a copy of the pinned root" in chain_check([leaf, ca, root, other_root], [root])[1]
    assert "follows the root" in chain_check([leaf, ca, leaf], [root])[1]
    assert "not a trusted RIM root" in chain_check([leaf, ca, root], [other_root])[1]
    assert "no certificates" in chain_check([], [root])[1]
    assert "more than 8" in chain_check([leaf] * 9, [root])[1]
    assert "not signed by" in chain_check([leaf, root], [root])[1]


def test_chain_ca_flags_path_length_and_key_usage() -> None:
    root_key, root = make_cert("root")
    for kwargs, message in [({"ca": False}, "is not a CA"), ({"ca": None}, "no basicConstraints"),
                            ({"usage": "digital_signature"}, "may not sign certificates")]:
        ca_key, ca = make_cert("ca", (root_key, root.subject), **kwargs)  # type: ignore[arg-type]
        _, leaf = make_cert("leaf", (ca_key, ca.subject), ca=False)
        assert message in chain_check([leaf, ca], [root])[1]
    ca1_key, ca1 = make_cert("ca1", (root_key, root.subject), path_length=0)
    ca2_key, ca2 = make_cert("ca2", (ca1_key, ca1.subject))
    _, leaf = make_cert("leaf", (ca2_key, ca2.subject), ca=False)
    assert "allows 0 CA certificates below it" in chain_check([leaf, ca2, ca1], [root])[1]
    _, leaf = make_cert("leaf", (root_key, root.subject), ca=False, usage="key_cert_sign")
    assert "without digitalSignature" in chain_check([leaf], [root])[1]


def test_chain_validity_of_every_certificate_including_the_root() -> None:
    root_key, root = make_cert("root", days=(-10, -1))  # the pinned root itself has expired
    _, leaf = make_cert("leaf", (root_key, root.subject), ca=False)
    ok, message = chain_check([leaf], [root])
    assert not ok and "root is not valid at" in message
    root_key, root = make_cert("root")
    _, leaf = make_cert("leaf", (root_key, root.subject), ca=False, days=(1, 10))  # not yet valid
    assert "leaf is not valid at" in chain_check([leaf], [root])[1]
    assert verify_chain([leaf], [root], (T_NOW + timedelta(days=2)).replace(tzinfo=None), "t").ok


def test_utc_aware_now_in_other_zones(driver_xml: bytes) -> None:
    from datetime import timezone

    local = T_2024.astimezone(timezone(timedelta(hours=-7)))
    assert verify(driver_xml, local).ok
    assert T_2024.tzinfo is UTC
