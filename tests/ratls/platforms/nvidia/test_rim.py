"""parse_rim: NVIDIA's RIM vectors read as expected; malformed and hostile documents are refused
with an EvidenceError naming what is wrong, and the parser never fetches anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.x509.oid import NameOID

from ratls.errors import EvidenceError
from ratls.platforms.nvidia.rim import HASH_NS, MAX_RIM_SIZE, SWID_NS, parse_rim

from .rim_testlib import DRIVER_TEST, LOCAL_RIMS, SDK_RIM_FILES, SDK_RIMS, SWIDTAGS, VBIOS_TEST, tripwire_server

ZERO = "00" * 48
ONE = "11" * 48


def doc(resources: str | None = None, *, meta: str | None = None, root_attrs: str = 'tagId="t1"',
        extra: str = "", prolog: str = "") -> bytes:
    """A small unsigned SWID tag in NVIDIA's layout."""
    if resources is None:
        resources = res(0, True, [ONE])
    if meta is None:
        meta = '<ns0:Meta colloquialVersion="550.90.07" product="GH100"/>'
    return (f'{prolog}<SoftwareIdentity xmlns="{SWID_NS}" xmlns:ns0="{SWID_NS}" xmlns:ns2="{HASH_NS}" {root_attrs}>'
            f'{meta}<ns0:Payload>{resources}</ns0:Payload>{extra}</SoftwareIdentity>').encode()


def res(index: object, active: object, hashes: list[str], *, alternatives: object = None, size: object = 48) -> str:
    count = len(hashes) if alternatives is None else alternatives
    attrs = " ".join(f'ns2:Hash{i}="{h}"' for i, h in enumerate(hashes))
    return (f'<ns0:Resource type="Measurement" index="{index}" active="{active}" alternatives="{count}" {attrs} '
            f'size="{size}"/>')


@pytest.mark.parametrize("name", SWIDTAGS)
def test_every_swidtag_parses(nvidia_vectors: Path, name: str) -> None:
    rim = parse_rim((nvidia_vectors / LOCAL_RIMS / f"{name}.swidtag").read_bytes())
    assert rim.product == "GH100"
    assert sorted(rim.measurements) == list(range(64))
    assert all(m.size == 48 and all(len(a) == 48 for a in m.alternatives) for m in rim.measurements.values())
    assert len(rim.signer_chain) == 4
    assert rim.signer_chain[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "HCC RIM L4 Signer"
    assert rim.signer_chain[-1].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "NVIDIA CoRIM signing Root CA")


@pytest.mark.parametrize("name", SDK_RIM_FILES)
def test_sdk_rims_parse(nvidia_vectors: Path, name: str) -> None:
    rim = parse_rim((nvidia_vectors / SDK_RIMS / name).read_bytes())
    assert rim.product in ("GH100", "GB100")
    assert rim.measurements and rim.signer_chain


def test_driver_test_rim_values(nvidia_vectors: Path) -> None:
    rim = parse_rim((nvidia_vectors / DRIVER_TEST).read_bytes())
    assert (rim.version, rim.product) == ("545.00", "GH100")
    assert rim.tag_id.startswith("f0d3a263ab9ef4b9")
    assert sorted(i for i, m in rim.measurements.items() if m.active) == [7, *range(21, 41)]
    assert rim.measurements[7].alternatives == (bytes.fromhex(
        "0e0ee161b59bf124ce6b6dca6efa7616d28077862c0e57dca7d5efd63d00eeed4851922941e846a38c464cbedbc168d9"),)
    assert rim.measurements[0].alternatives == (bytes(48),) and not rim.measurements[0].active


def test_vbios_test_rim_values(nvidia_vectors: Path) -> None:
    rim = parse_rim((nvidia_vectors / VBIOS_TEST).read_bytes())
    assert rim.version == "96.00.5E.00.01"
    assert sorted(i for i, m in rim.measurements.items() if m.active) == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12]
    assert max(len(m.alternatives) for m in rim.measurements.values()) > 1


def test_minimal_document() -> None:
    rim = parse_rim(doc(res(0, "True", [ONE]) + res(5, "false", [ZERO, ONE])))
    assert (rim.version, rim.product, rim.tag_id, rim.signer_chain) == ("550.90.07", "GH100", "t1", ())
    assert rim.measurements[0].active and rim.measurements[0].alternatives == (bytes.fromhex(ONE),)
    assert not rim.measurements[5].active and len(rim.measurements[5].alternatives) == 2


def test_comments_between_resources_are_ignored() -> None:
    rim = parse_rim(doc("<!-- c -->" + res(0, True, [ONE]) + "<?pi x?>"))
    assert list(rim.measurements) == [0]


@pytest.mark.parametrize(("xml", "message"), [
    (doc(res(0, True, [ONE]), root_attrs=""), "no tagId"),
    (doc(meta=""), "0 Meta elements"),
    (doc(meta='<ns0:Meta colloquialVersion="1" product="GH100"/><ns0:Meta colloquialVersion="2" product="GH100"/>'),
     "2 Meta elements"),
    (doc(meta='<ns0:Meta product="GH100"/>'), "no colloquialVersion"),
    (doc(meta='<ns0:Meta colloquialVersion="1"/>'), "no product"),
    (doc(extra=f'<ns0:Payload>{res(1, True, [ONE])}</ns0:Payload>'), "2 Payload elements"),
    (doc(""), "no measurements"),
    (doc(res(3, True, [ONE]) + res(3, False, [ZERO])), "index 3 twice"),
    (doc(res(0, True, [ONE], alternatives=2)), "alternatives=2 but the hashes present are Hash0"),
    (doc(res(0, True, [ONE, ONE], alternatives=1)), "alternatives=1 but the hashes present are Hash0, Hash1"),
    (doc(res(0, True, [], alternatives=0)), "alternatives=0"),
    (doc(res(0, True, ["11" * 32], size=32)), "size 32"),
    (doc(res(0, True, ["11" * 32])), "Hash0 is not 48 bytes of hex"),
    (doc(res(0, True, ["zz" * 48])), "Hash0 is not 48 bytes of hex"),
    (doc(res(0, True, [" " + ONE[1:]])), "Hash0 is not 48 bytes of hex"),
    (doc(res("+1", True, [ONE])), "index='+1' is not a decimal number"),
    (doc(res(" 1", True, [ONE])), "is not a decimal number"),
    (doc(res(255, True, [ONE])), "index is larger than 254"),
    (doc(res(0, "yes", [ONE])), "neither True nor False"),
    (doc(res(0, True, [ONE], size="")), "size='' is not a decimal number"),
    (doc(res(0, True, [ONE]).replace('type="Measurement"', 'type="File"')), "unexpected element Resource"),
    (doc('<ns0:File name="x"/>'), "unexpected element File"),
    (doc(res(0, True, [ONE]).replace("Hash0", "HashX")), "unexpected attribute HashX"),
    (doc().replace(b"<SoftwareIdentity", b"<Other").replace(b"</SoftwareIdentity", b"</Other"),
     "root element is Other"),
    (doc().replace(f'xmlns="{SWID_NS}" '.encode(), b'xmlns="urn:other" '), "root element is SoftwareIdentity"),
    (b"", "not well-formed"),
    (b"\x00\xff garbage", "not UTF-8"),
    (b"\x00<a/>", "NUL byte"),
    (b"<a>", "not well-formed"),
    (doc()[:-5], "not well-formed"),
])
def test_malformed_documents(xml: bytes, message: str) -> None:
    with pytest.raises(EvidenceError, match=message.replace("+", r"\+").replace("(", r"\(")):
        parse_rim(xml)


def test_not_bytes_and_too_large() -> None:
    with pytest.raises(EvidenceError, match="must be bytes"):
        parse_rim(doc().decode())  # type: ignore[arg-type]
    with pytest.raises(EvidenceError, match="larger than"):
        parse_rim(doc(extra="<!--" + "x" * MAX_RIM_SIZE + "-->"))


def test_keyinfo_certificates_must_be_clean(nvidia_vectors: Path) -> None:
    xml = (nvidia_vectors / DRIVER_TEST).read_bytes()
    start = xml.index(b"<ds:X509Certificate>") + len(b"<ds:X509Certificate>")
    with pytest.raises(EvidenceError, match="KeyInfo certificate 0 must be base64 text only"):
        parse_rim(xml[:start + 10] + b"<!-- split -->" + xml[start + 10:])
    with pytest.raises(EvidenceError, match="KeyInfo certificate 0 is not a DER certificate"):
        parse_rim(xml[:start] + b"!!" + xml[start:])
    with pytest.raises(EvidenceError, match="KeyInfo certificate 0 is not a DER certificate"):
        parse_rim(xml[:start] + b"AAAA" + xml[start:])
    block = xml[xml.index(b"<ds:X509Certificate>"):xml.index(b"</ds:X509Data>")]
    with pytest.raises(EvidenceError, match="more than 8"):
        parse_rim(xml.replace(block, block * 3))


# --- XML attacks: each refused outright, nothing fetched or read ----------------------------------------------------

BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
                            for i in range(1, 10))
                  + ']>')


def test_billion_laughs() -> None:
    xml = doc(res(0, True, [ONE]).replace('size="48"', 'size="48" name="&lol9;"'), prolog=BILLION_LAUGHS)
    with pytest.raises(EvidenceError, match="DOCTYPE"):
        parse_rim(xml)


def test_external_entity_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    prolog = f'<!DOCTYPE r [<!ENTITY xxe SYSTEM "file://{secret}">]>'
    xml = doc(meta='<ns0:Meta colloquialVersion="&xxe;" product="GH100"/>', prolog=prolog)
    with pytest.raises(EvidenceError, match="DOCTYPE") as info:
        parse_rim(xml)
    assert "TOP-SECRET" not in str(info.value)


@pytest.mark.parametrize("kind", ["entity", "dtd", "parameter"])
def test_external_http_entity_and_dtd_are_never_fetched(kind: str) -> None:
    with tripwire_server() as (base, seen):
        prolog = {
            "entity": f'<!DOCTYPE r [<!ENTITY xxe SYSTEM "{base}/entity">]>',
            "dtd": f'<!DOCTYPE SoftwareIdentity SYSTEM "{base}/external.dtd">',
            "parameter": f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{base}/param"> %p;]>',
        }[kind]
        xml = doc(meta='<ns0:Meta colloquialVersion="&xxe;" product="GH100"/>' if kind == "entity" else None,
                  prolog=prolog)
        with pytest.raises(EvidenceError, match="DOCTYPE"):
            parse_rim(xml)
        # The same document in UTF-16 or UTF-32 would hide "<!DOCTYPE" from a byte check.
        for encoding in ("utf-16", "utf-16-be", "utf-32"):
            with pytest.raises(EvidenceError, match="UTF-8|NUL"):
                parse_rim(xml.decode().encode(encoding))
    assert seen == []


def test_other_encodings_are_refused() -> None:
    laughs = doc(res(0, True, [ONE]).replace('size="48"', 'size="48" name="&lol9;"'),
                 prolog=BILLION_LAUGHS.replace('<?xml version="1.0"?>', ""))
    for encoding in ("utf-16", "utf-16-le", "utf-32"):
        with pytest.raises(EvidenceError, match="UTF-8|NUL"):
            parse_rim(laughs.decode().encode(encoding))
    with pytest.raises(EvidenceError, match="declares encoding ISO-8859-1"):
        parse_rim(b'<?xml version="1.0" encoding="ISO-8859-1"?>' + doc())
    with pytest.raises(EvidenceError, match="not UTF-8"):
        parse_rim(doc(meta='<ns0:Meta colloquialVersion="XX" product="GH100"/>').replace(b"XX", b"\xe9"))
    assert parse_rim(b'<?xml version="1.0" encoding="UTF-8"?>' + doc()).version == "550.90.07"


def test_xinclude_is_not_processed() -> None:
    include = '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="/etc/passwd" parse="text"/>'
    with pytest.raises(EvidenceError, match="unexpected element include"):
        parse_rim(doc(res(0, True, [ONE]) + include))


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(EvidenceError, match="not well-formed"):
        parse_rim(doc(extra="<a>" * 5000 + "</a>" * 5000))
