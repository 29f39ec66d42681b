"""The simulator's RIMs: NVIDIA's shape, read unchanged by parse_rim and verify_rim with the
simulated root, and never accepted under NVIDIA's root."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree

from ratls.errors import UsageError
from ratls.platforms.nvidia.rim import DS_NS, SWID_NS, parse_rim
from ratls.platforms.nvidia.rim_verify import shipped_rim_root, verify_rim
from ratls.platforms.nvidia.sim_rim import generate_rim_root, generate_rim_signer, sign_rim
from ratls.platforms.nvidia.types import RimKind

from .rim_testlib import DRIVER_TEST, T_NOW, digest, sim_signer

GOLDEN = {7: (True, (digest(7),)), 21: (True, (digest(1), digest(21))), 30: (False, (digest(30),))}


def parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=True)


def test_round_trip_through_parse_and_verify() -> None:
    signer = sim_signer()
    xml = signer.sign(GOLDEN, version="550.90.07", product="GH100")
    rim = parse_rim(xml)
    assert (rim.version, rim.product) == ("550.90.07", "GH100")
    assert sorted(rim.measurements) == list(range(64))
    assert rim.measurements[21].alternatives == (digest(1), digest(21)) and rim.measurements[21].active
    assert not rim.measurements[30].active and not rim.measurements[0].active
    assert rim.measurements[0].alternatives == (bytes(48),)
    result = verify_rim(xml, RimKind.DRIVER, [signer.root], T_NOW, expected_version="550.90.07",
                        expected_product="GH100")
    assert result.ok, result.checks
    assert result.rim is not None and result.rim.measurements == rim.measurements
    assert [c.name for c in result.checks][1:3] == ["gpu.driver-rim.chain", "gpu.driver-rim.signature"]


def test_never_valid_under_nvidias_root() -> None:
    xml = sim_signer().sign(GOLDEN)
    result = verify_rim(xml, RimKind.DRIVER, [shipped_rim_root()], T_NOW, expected_version=None,
                        expected_product=None)
    assert not result.ok and result.rim is None
    assert [c.name for c in result.checks if not c.ok] == ["gpu.driver-rim.chain"]


def test_same_shape_as_nvidias(nvidia_vectors: Path) -> None:
    ours = etree.fromstring(sim_signer().sign(GOLDEN), parser())
    theirs = etree.fromstring((nvidia_vectors / DRIVER_TEST).read_bytes(), parser())
    assert ours.nsmap == theirs.nsmap
    assert [c.tag for c in ours] == [c.tag for c in theirs]
    assert set(ours.attrib) == set(theirs.attrib)
    meta = f"{{{SWID_NS}}}Meta"
    assert set(ours.find(meta).attrib) <= set(theirs.find(meta).attrib)
    resource = f"{{{SWID_NS}}}Payload/{{{SWID_NS}}}Resource"
    assert set(ours.find(resource).attrib) == set(theirs.find(resource).attrib)
    def skeleton(root: etree._Element) -> list[str]:  # the Signature's elements, certificates left out
        return [etree.QName(e).localname for e in root.find(f"{{{DS_NS}}}Signature").iter()
                if etree.QName(e).localname != "X509Certificate"]

    assert skeleton(ours) == skeleton(theirs)
    for tag in ("CanonicalizationMethod", "SignatureMethod", "Transform", "DigestMethod"):
        path = f".//{{{DS_NS}}}{tag}"
        assert [e.get("Algorithm") for e in ours.iterfind(path)] == [e.get("Algorithm") for e in theirs.iterfind(path)]
    assert ours.find(f".//{{{DS_NS}}}Reference").attrib == {"URI": ""}


def test_chain_shape_and_validity() -> None:
    root_key, root = generate_rim_root(not_before=T_NOW - timedelta(days=1), days=30)
    key, chain = generate_rim_signer(root_key, root, not_before=T_NOW - timedelta(days=1), days=2)
    assert len(chain) == 3 and chain[-1] == root and isinstance(key.curve, ec.SECP384R1)
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey) and root.public_key().curve.name == "secp384r1"
    assert "NOT NVIDIA" in root.subject.rfc4514_string()
    xml = sign_rim("96.00.9F.00.01", "GH100", GOLDEN, key, chain)
    check = lambda now: verify_rim(xml, RimKind.VBIOS, [root], now, expected_version="96.00.9f.00.01",  # noqa: E731
                                   expected_product="GH100")
    assert check(T_NOW).ok
    late = check(T_NOW + timedelta(days=3))
    assert [c.name for c in late.checks if not c.ok] == ["gpu.vbios-rim.chain"]


@pytest.mark.parametrize(("version", "product", "measurements", "message"), [
    ("", "GH100", {}, "version must be printable ASCII"),
    ("1\n2", "GH100", {}, "version must be printable ASCII"),
    ("550", "GH\u00e9", {}, "product must be printable ASCII"),
    ("550", "GH100", {64: (True, (digest(1),))}, "indices are 0..63"),
    ("550", "GH100", {1: (True, (b"short",))}, "48-byte"),
    ("550", "GH100", {1: (True, ())}, "48-byte"),
])
def test_bad_input(version: str, product: str, measurements: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        sim_signer().sign(measurements, version=version, product=product)


def test_attribute_values_are_escaped() -> None:
    xml = sim_signer().sign({}, version='1"<&>', product="GH100")
    assert parse_rim(xml).version == '1"<&>'
