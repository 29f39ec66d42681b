"""Azure vTPM evidence as carried in the certificate: the HCL report, the TPM quote with its
signature and the PCR values, and (TDX) the TD quote. The JSON layouts are the ones Azure
attesters in the confidential-containers project (trustee) emit, so recorded evidence from those
tools verifies here too:

- version 1: ``{"version": 1, "tpm_quote": {signature, message, pcrs (hex)}, "hcl_report" and
  "td_quote" (TDX) or "vcek" (SEV-SNP, DER): base64url}``; what this gateway emits;
- version 2: the same layout; the HCL runtime data's ``user-data`` then also carries the report
  data the TPM quote binds (checked as ``azure.user-data``);
- their older, unversioned SEV-SNP layout: ``{"quote": {...}, "report": [bytes], "vcek": PEM}``.

Anything else is UnreadableEvidence: no verdict, the input (or this verifier) is wrong."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from ...errors import UnreadableEvidence
from ..snp.abi import Endorsement

MAX_EVIDENCE = 256 * 1024
PCR_COUNT = 24
VERSIONS = (1, 2)  # the versioned layouts read (0 stands for the unversioned one)
LAYOUT_HINT = ("give the evidence JSON as recorded: version 1 or 2 (tpm_quote, hcl_report, td_quote or vcek), "
               "or the unversioned quote/report/vcek layout")


@dataclass(frozen=True)
class AzureEvidence:
    hcl_report: bytes
    tpm_message: bytes
    tpm_signature: bytes
    pcrs: tuple[bytes, ...]
    td_quote: bytes | None = None
    extras: dict[str, bytes] = field(default_factory=dict)  # e.g. a VCEK found in the recorded file
    version: int = 1  # the layout read: 0 (unversioned), 1 or 2

    def pcr_map(self) -> dict[int, bytes]:
        return dict(enumerate(self.pcrs))

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "version": 1,
            "tpm_quote": {"signature": self.tpm_signature.hex(), "message": self.tpm_message.hex(),
                          "pcrs": [p.hex() for p in self.pcrs]},
            "hcl_report": _b64url(self.hcl_report),
        }
        if self.td_quote is not None:
            doc["td_quote"] = _b64url(self.td_quote)
        return json.dumps(doc, separators=(",", ":")).encode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise UnreadableEvidence(f"Azure evidence: {what} must be a base64url string", hint=LAYOUT_HINT)
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise UnreadableEvidence(f"Azure evidence: {what} is not base64url", hint=LAYOUT_HINT) from None


def _bytes(value: Any, what: str) -> bytes:
    """Hex string or list of byte values (both shapes occur in recorded evidence)."""
    try:
        if isinstance(value, str):
            return bytes.fromhex(value)
        if isinstance(value, list) and all(isinstance(v, int) for v in value):
            return bytes(value)
    except ValueError:
        pass
    raise UnreadableEvidence(f"Azure evidence: {what} must be hex or a list of bytes", hint=LAYOUT_HINT)


def _quote(doc: Any) -> tuple[bytes, bytes, tuple[bytes, ...]]:
    if not isinstance(doc, dict):
        raise UnreadableEvidence("Azure evidence: the TPM quote must be an object with message, signature and pcrs",
                                 hint=LAYOUT_HINT)
    missing = {"message", "signature", "pcrs"} - set(doc)
    if missing:
        raise UnreadableEvidence(f"Azure evidence: the TPM quote lacks {', '.join(sorted(missing))}",
                                 hint=LAYOUT_HINT)
    pcrs = doc["pcrs"]
    if not isinstance(pcrs, list) or len(pcrs) != PCR_COUNT:
        raise UnreadableEvidence(f"Azure evidence: expected {PCR_COUNT} PCR values (sha256 bank 0-23)",
                                 hint=LAYOUT_HINT)
    values = tuple(_bytes(p, f"pcrs[{i}]") for i, p in enumerate(pcrs))
    if any(len(v) != 32 for v in values):
        raise UnreadableEvidence("Azure evidence: every PCR value must be 32 bytes (sha256 bank)", hint=LAYOUT_HINT)
    return _bytes(doc["message"], "tpm_quote.message"), _bytes(doc["signature"], "tpm_quote.signature"), values


def _version(doc: dict[str, Any]) -> int:
    version = doc.get("version")
    if isinstance(version, bool) or version not in VERSIONS:
        raise UnreadableEvidence(f"Azure evidence version {version!r} is not one this verifier reads "
                                 f"({', '.join(map(str, VERSIONS))})",
                                 hint="upgrade ratls-gateway to read it, or give evidence in a layout it reads")
    return int(version)


def parse_azure_evidence(raw: bytes) -> AzureEvidence:
    if len(raw) > MAX_EVIDENCE:
        raise UnreadableEvidence(f"Azure evidence is {len(raw)} bytes; refusing more than {MAX_EVIDENCE}",
                                 hint=LAYOUT_HINT)
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise UnreadableEvidence("Azure evidence is not JSON", hint=LAYOUT_HINT) from None
    if not isinstance(doc, dict):
        raise UnreadableEvidence("Azure evidence must be a JSON object", hint=LAYOUT_HINT)
    if "tpm_quote" in doc:
        version = _version(doc)
        message, signature, pcrs = _quote(doc["tpm_quote"])
        td_quote = _unb64url(doc["td_quote"], "td_quote") if "td_quote" in doc else None
        extras = {Endorsement.VCEK: _unb64url(doc["vcek"], "vcek")} if "vcek" in doc else {}
        return AzureEvidence(_unb64url(doc.get("hcl_report"), "hcl_report"), message, signature, pcrs, td_quote,
                             extras, version=version)
    if "quote" in doc and "report" in doc:
        message, signature, pcrs = _quote(doc["quote"])
        extras = {}
        if isinstance(doc.get("vcek"), str):
            extras[Endorsement.VCEK] = doc["vcek"].encode()
        return AzureEvidence(_bytes(doc["report"], "report"), message, signature, pcrs, None, extras, version=0)
    raise UnreadableEvidence("Azure evidence has neither 'tpm_quote' nor 'quote'/'report'", hint=LAYOUT_HINT)
