"""Reading NVIDIA RIMs (SWID tags, ISO 19770-2:2015) on a hardened XML parser. Parsing only.

A RIM lists, per measurement index (0-based: SPDM block index - 1), whether it is active and the
SHA-384 values it may take. Nothing here verifies the signature: ``rim_verify`` does, and takes
the values only from the document signxml returns as signed. Every malformed input, however
hostile (entities, DTDs, deep nesting, garbage bytes), is an ``EvidenceError`` and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography import x509
from lxml import etree

from ...errors import EvidenceError
from ...x509util import X509_ERRORS, force_parse
from .types import DIGEST_LEN, Rim, RimMeasurement

MAX_RIM_SIZE = 1024 * 1024  # NVIDIA's RIMs are ~20 KiB; anything near this bound is not one
MAX_INDEX = 254  # RIM index i is SPDM block i + 1, a u8 that NVIDIA's GPUs use up to 64
MAX_ALTERNATIVES = 64
MAX_KEYINFO_CERTS = 8

SWID_NS = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
HASH_NS = "http://www.w3.org/2001/04/xmlenc#sha384"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"

_DECIMAL = re.compile(r"[0-9]{1,5}")
_HEX = re.compile(r"[0-9a-fA-F]+")
_HASH_ATTR = re.compile(r"Hash([0-9]{1,3})")


def swid(tag: str) -> str:
    return f"{{{SWID_NS}}}{tag}"


def ds(tag: str) -> str:
    return f"{{{DS_NS}}}{tag}"


def hardened_parser() -> etree.XMLParser:
    """A parser that never expands entities, reads a DTD or touches the network or the file
    system, and keeps libxml2's depth and size limits (no ``huge_tree``). A fresh one per call:
    lxml parsers keep state (error log, resolvers) and must not be shared between threads."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                           dtd_validation=False, attribute_defaults=False, collect_ids=False)


def read_document(xml: bytes, what: str = "RIM") -> etree._Element:
    """The root element of *xml*, parsed safely. A DOCTYPE of any kind is refused: a RIM never
    has one, and refusing it outright removes every entity and DTD attack at once."""
    if not isinstance(xml, bytes | bytearray):
        raise EvidenceError(f"{what} must be bytes, not {type(xml).__name__}")
    if len(xml) > MAX_RIM_SIZE:
        raise EvidenceError(f"{what} is {len(xml)} bytes, larger than the {MAX_RIM_SIZE}-byte limit")
    # UTF-8 only (NVIDIA's RIMs are ASCII): in UTF-16 or UTF-32 the byte checks below would not
    # see a DOCTYPE. NUL is never allowed in XML, and is in every UTF-16/32 document.
    try:
        bytes(xml).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvidenceError(f"{what} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if b"\x00" in xml:
        raise EvidenceError(f"{what} contains a NUL byte", hint="RIMs are UTF-8 text; UTF-16/32 is refused")
    # Checked before parsing as well as after: libxml2 parses an internal subset (entity
    # declarations) even when it resolves nothing, and we do not want it to do even that.
    if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
        raise EvidenceError(f"{what} has a DOCTYPE or entity declaration", hint="RIMs never carry a DTD; refused")
    try:
        root = etree.fromstring(bytes(xml), parser=hardened_parser())
    except (etree.LxmlError, ValueError) as exc:
        raise EvidenceError(f"{what} is not well-formed XML: {exc}") from None
    if root is None:
        raise EvidenceError(f"{what} has no root element")
    docinfo = root.getroottree().docinfo
    # A declared encoding other than UTF-8 could still hide markup from the byte checks.
    if (docinfo.encoding or "UTF-8").upper() not in ("UTF-8", "US-ASCII", "ASCII"):
        raise EvidenceError(f"{what} declares encoding {docinfo.encoding}", hint="RIMs are UTF-8 text")
    # Defence in depth: nothing above should let a DOCTYPE through.
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise EvidenceError(f"{what} has a DOCTYPE", hint="RIMs never carry a DTD; refused")
    if any(True for _ in root.iter(etree.Entity)):
        raise EvidenceError(f"{what} contains an entity reference")
    return root


def parse_rim(xml: bytes) -> Rim:
    """Parse a RIM document *without* verifying it (see ``rim_verify.verify_rim``)."""
    root = read_document(xml)
    return rim_from_element(root, keyinfo_certificates(root))


def rim_from_element(root: etree._Element, signer_chain: tuple[x509.Certificate, ...] = ()) -> Rim:
    """The RIM's values from a parsed ``SoftwareIdentity`` element (the verified one, in
    ``verify_rim``: the Signature is already removed from it by the enveloped transform)."""
    if root.tag != swid("SoftwareIdentity"):
        raise EvidenceError(f"RIM root element is {_tag_name(root)}, expected SWID SoftwareIdentity")
    tag_id = _attribute(root, "tagId", "SoftwareIdentity")
    meta = _only_child(root, "Meta")
    version = _attribute(meta, "colloquialVersion", "Meta")
    product = _attribute(meta, "product", "Meta")
    payload = _only_child(root, "Payload")
    measurements: dict[int, RimMeasurement] = {}
    for element in payload:
        if not isinstance(element.tag, str):
            continue  # comments and processing instructions carry no values
        measurement = _measurement(element)
        if measurement.index in measurements:
            raise EvidenceError(f"RIM Payload has measurement index {measurement.index} twice")
        measurements[measurement.index] = measurement
    if not measurements:
        raise EvidenceError("RIM Payload has no measurements")
    return Rim(version=version, product=product, tag_id=tag_id, measurements=measurements,
               signer_chain=signer_chain)


def keyinfo_certificates(root: etree._Element) -> tuple[x509.Certificate, ...]:
    """The ``KeyInfo/X509Data/X509Certificate`` list of the document's Signature, in document
    order (leaf first in NVIDIA's RIMs). Empty when the document has no Signature."""
    signature = root.find(ds("Signature"))
    if signature is None:
        return ()
    elements = signature.findall(f"{ds('KeyInfo')}/{ds('X509Data')}/{ds('X509Certificate')}")
    if len(elements) > MAX_KEYINFO_CERTS:
        raise EvidenceError(f"RIM KeyInfo has {len(elements)} certificates, more than {MAX_KEYINFO_CERTS}")
    return tuple(_certificate(element, i) for i, element in enumerate(elements))


def _certificate(element: etree._Element, position: int) -> x509.Certificate:
    where = f"RIM KeyInfo certificate {position}"
    # A comment inside the element would split its text: .text would be only the first part.
    if len(element) or not element.text:
        raise EvidenceError(f"{where} must be base64 text only")
    try:
        der = base64.b64decode("".join(element.text.split()), validate=True)
        cert = x509.load_der_x509_certificate(der)
    except (binascii.Error, *X509_ERRORS) as exc:
        raise EvidenceError(f"{where} is not a DER certificate: {exc}") from None
    return force_parse(cert, where)


def _measurement(element: etree._Element) -> RimMeasurement:
    if element.tag != swid("Resource") or element.get("type") != "Measurement":
        raise EvidenceError(f"RIM Payload has an unexpected element {_tag_name(element)} "
                            f"(type={element.get('type')!r}); only Resource type=\"Measurement\" is read")
    index = _number(element, "index", None)
    where = f"RIM measurement {index}"
    if index > MAX_INDEX:
        raise EvidenceError(f"{where}: index is larger than {MAX_INDEX}")
    active_text = _attribute(element, "active", where)
    if active_text.lower() not in ("true", "false"):
        raise EvidenceError(f"{where}: active={active_text!r} is neither True nor False")
    count = _number(element, "alternatives", where)
    size = _number(element, "size", where)
    # The hash namespace names SHA-384: a size other than 48 cannot describe those values.
    if size != DIGEST_LEN:
        raise EvidenceError(f"{where}: size {size} is not the SHA-384 length {DIGEST_LEN}")
    if not 1 <= count <= MAX_ALTERNATIVES:
        raise EvidenceError(f"{where}: alternatives={count} is outside 1..{MAX_ALTERNATIVES}")
    return RimMeasurement(index=index, active=active_text.lower() == "true", size=size,
                          alternatives=_alternatives(element, count, size, where))


def _alternatives(element: etree._Element, count: int, size: int, where: str) -> tuple[bytes, ...]:
    found: dict[int, str] = {}
    for name, value in element.attrib.items():
        qname = etree.QName(name)
        if qname.namespace != HASH_NS:
            continue
        match = _HASH_ATTR.fullmatch(qname.localname)
        if match is None:
            raise EvidenceError(f"{where}: unexpected attribute {qname.localname} in the SHA-384 namespace")
        found[int(match.group(1))] = value
    if sorted(found) != list(range(count)):
        raise EvidenceError(f"{where}: alternatives={count} but the hashes present are "
                            f"{', '.join(f'Hash{i}' for i in sorted(found)) or 'none'}")
    values = []
    for i in range(count):
        text = found[i]
        if _HEX.fullmatch(text) is None or len(text) != 2 * size:
            raise EvidenceError(f"{where}: Hash{i} is not {size} bytes of hex")
        values.append(bytes.fromhex(text))
    return tuple(values)


def _only_child(parent: etree._Element, tag: str) -> etree._Element:
    children = parent.findall(swid(tag))
    if len(children) != 1:
        raise EvidenceError(f"RIM has {len(children)} {tag} elements under {_tag_name(parent)}, expected exactly one")
    return children[0]


def _attribute(element: etree._Element, name: str, where: str | None) -> str:
    value = element.get(name)
    if value is None:
        raise EvidenceError(f"{where or _tag_name(element)} has no {name} attribute")
    return str(value)


def _number(element: etree._Element, name: str, where: str | None) -> int:
    text = _attribute(element, name, where or "RIM measurement")
    # Strict decimal: int() would also take " 7", "+7", "٧" and "7_0".
    if _DECIMAL.fullmatch(text) is None:
        raise EvidenceError(f"{where or 'RIM measurement'}: {name}={text!r} is not a decimal number")
    return int(text)


def _tag_name(element: etree._Element) -> str:
    if not isinstance(element.tag, str):
        return "a comment or processing instruction"
    return etree.QName(element).localname
