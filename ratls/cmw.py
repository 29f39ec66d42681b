"""RATS Conceptual Message Wrapper (draft-ietf-rats-msg-wrap), CBOR collection form.

A CMW *record* is ``[media-type, value]``; a *collection* is a map from text labels to
records or nested collections. The X.509 extension id-pe-cmw carries the CBOR form
inside an OCTET STRING (the ``cbor`` arm of the CMW CHOICE).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import cbor, der
from .errors import EvidenceError

OID_CMW = "1.3.6.1.5.5.7.1.35"
COLLECTION_TYPE_KEY = "__cmwc_t"
RATLS_COLLECTION_TYPE = "tag:ratls-gateway.dev,2026:ratls/1"

MEDIA_CLAIMS = "application/vnd.ratls.claims+cbor"
MEDIA_PKIX_CERT = "application/pkix-cert"
MEDIA_TDX_COLLATERAL = "application/vnd.ratls.tdx-collateral+json"
MEDIA_JSON = "application/json"
MEDIA_DER_CHAIN = "application/vnd.ratls.der-certificate-sequence"  # leaf first, back to back
MEDIA_SWID_XML = "application/swid+xml"
MEDIA_OCSP_RESPONSE = "application/ocsp-response"
# Endorsements are certificates unless their label says otherwise.
ENDORSEMENT_MEDIA_TYPES = {"tdx-collateral": MEDIA_TDX_COLLATERAL, "chain": MEDIA_DER_CHAIN,
                           "driver-rim": MEDIA_SWID_XML, "vbios-rim": MEDIA_SWID_XML}


def endorsement_media_type(label: str) -> str:
    if label.startswith("ocsp-"):
        return MEDIA_OCSP_RESPONSE
    return ENDORSEMENT_MEDIA_TYPES.get(label, MEDIA_PKIX_CERT)


MAX_CMW_BYTES = 256 * 1024


@dataclass(frozen=True)
class CmwRecord:
    media_type: str
    value: bytes

    def to_cbor_value(self) -> list[object]:
        return [self.media_type, self.value]


@dataclass
class CmwCollection:
    collection_type: str | None = None
    items: dict[str, CmwRecord | CmwCollection] = field(default_factory=dict)

    def to_cbor_value(self) -> dict[str, object]:
        out: dict[str, object] = {k: v.to_cbor_value() for k, v in self.items.items()}
        if self.collection_type is not None:
            out[COLLECTION_TYPE_KEY] = self.collection_type
        return out

    def encode(self) -> bytes:
        return cbor.encode(self.to_cbor_value())

    def record(self, label: str) -> CmwRecord:
        item = self.items.get(label)
        if item is None:
            raise EvidenceError(f"CMW collection has no '{label}' entry")
        if not isinstance(item, CmwRecord):
            raise EvidenceError(f"CMW entry '{label}' is a collection where a record was expected")
        return item

    def collection(self, label: str) -> CmwCollection | None:
        item = self.items.get(label)
        if item is None:
            return None
        if not isinstance(item, CmwCollection):
            raise EvidenceError(f"CMW entry '{label}' is a record where a collection was expected")
        return item


def _from_value(value: object, path: str, depth: int) -> CmwRecord | CmwCollection:
    if isinstance(value, list):
        if len(value) not in (2, 3):
            raise EvidenceError(f"CMW record at {path} must have 2 or 3 elements, has {len(value)}")
        media_type, payload = value[0], value[1]
        if not isinstance(media_type, str) or not media_type:
            raise EvidenceError(f"CMW record at {path}: type must be a media-type string")
        if not isinstance(payload, bytes):
            raise EvidenceError(f"CMW record at {path}: value must be a byte string")
        return CmwRecord(media_type, payload)
    if isinstance(value, dict):
        if depth > 4:
            raise EvidenceError(f"CMW collection nested too deeply at {path}")
        ctype = value.get(COLLECTION_TYPE_KEY)
        if ctype is not None and not isinstance(ctype, str):
            raise EvidenceError(f"CMW collection type at {path} must be a string")
        items: dict[str, CmwRecord | CmwCollection] = {}
        for key, item in value.items():
            if key == COLLECTION_TYPE_KEY:
                continue
            if not isinstance(key, str):
                raise EvidenceError(f"CMW collection label at {path} must be text, got {type(key).__name__}")
            items[key] = _from_value(item, f"{path}/{key}", depth + 1)
        if not items:
            raise EvidenceError(f"CMW collection at {path} is empty")
        return CmwCollection(ctype, items)
    raise EvidenceError(f"CMW item at {path} is neither a record nor a collection")


def decode_collection(data: bytes) -> CmwCollection:
    if len(data) > MAX_CMW_BYTES:
        raise EvidenceError(f"CMW is {len(data)} bytes, larger than the {MAX_CMW_BYTES}-byte limit")
    value = cbor.decode(data, what="CMW collection")
    result = _from_value(value, "", 0)
    if not isinstance(result, CmwCollection):
        raise EvidenceError("the RA-TLS extension holds a CMW record, a collection was expected")
    return result


def encode_extension_value(collection: CmwCollection) -> bytes:
    """DER for the extnValue contents: the CBOR arm of the CMW CHOICE (an OCTET STRING)."""
    return der.encode_octet_string(collection.encode())


def decode_extension_value(extn_value: bytes) -> CmwCollection:
    tlv = der.read_tlv(extn_value)
    if tlv.tag == der.TAG_UTF8_STRING:
        raise EvidenceError("the CMW extension holds the JSON form; ratls/1 uses the CBOR form")
    content = der.read_single(extn_value, der.TAG_OCTET_STRING, "CMW extension")
    return decode_collection(content)
