"""Azure vTPM evidence as carried in the certificate: the HCL report, the TPM quote with its
signature and the PCR values, and (TDX) the TD quote. The JSON shape is the one Azure
attesters in the confidential-containers project emit ("evidence-v1"), so recorded evidence
from those tools verifies here too; their older SEV-SNP shape (byte lists) is read as well."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from ...errors import EvidenceError

MAX_EVIDENCE = 256 * 1024
PCR_COUNT = 24


@dataclass(frozen=True)
class AzureEvidence:
    hcl_report: bytes
    tpm_message: bytes
    tpm_signature: bytes
    pcrs: tuple[bytes, ...]
    td_quote: bytes | None = None
    extras: dict[str, bytes] = field(default_factory=dict)  # e.g. a VCEK found in the recorded file

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
        raise EvidenceError(f"Azure evidence: {what} must be a base64url string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise EvidenceError(f"Azure evidence: {what} is not base64url") from None


def _bytes(value: Any, what: str) -> bytes:
    """Hex string or list of byte values (both shapes occur in recorded evidence)."""
    try:
        if isinstance(value, str):
            return bytes.fromhex(value)
        if isinstance(value, list) and all(isinstance(v, int) for v in value):
            return bytes(value)
    except ValueError:
        pass
    raise EvidenceError(f"Azure evidence: {what} must be hex or a list of bytes")


def _quote(doc: Any) -> tuple[bytes, bytes, tuple[bytes, ...]]:
    if not isinstance(doc, dict):
        raise EvidenceError("Azure evidence: the TPM quote must be an object with message, signature and pcrs")
    missing = {"message", "signature", "pcrs"} - set(doc)
    if missing:
        raise EvidenceError(f"Azure evidence: the TPM quote lacks {', '.join(sorted(missing))}")
    pcrs = doc["pcrs"]
    if not isinstance(pcrs, list) or len(pcrs) != PCR_COUNT:
        raise EvidenceError(f"Azure evidence: expected {PCR_COUNT} PCR values (sha256 bank 0-23)")
    values = tuple(_bytes(p, f"pcrs[{i}]") for i, p in enumerate(pcrs))
    if any(len(v) != 32 for v in values):
        raise EvidenceError("Azure evidence: every PCR value must be 32 bytes (sha256 bank)")
    return _bytes(doc["message"], "tpm_quote.message"), _bytes(doc["signature"], "tpm_quote.signature"), values


def parse_azure_evidence(raw: bytes) -> AzureEvidence:
    if len(raw) > MAX_EVIDENCE:
        raise EvidenceError(f"Azure evidence is {len(raw)} bytes; refusing more than {MAX_EVIDENCE}")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise EvidenceError("Azure evidence is not JSON", hint="give the evidence JSON (hcl_report, tpm_quote, "
                                                               "td_quote) as recorded") from None
    if not isinstance(doc, dict):
        raise EvidenceError("Azure evidence must be a JSON object")
    if "tpm_quote" in doc:
        if doc.get("version") != 1:
            raise EvidenceError(f"Azure evidence version {doc.get('version')!r} is not supported (1)")
        message, signature, pcrs = _quote(doc["tpm_quote"])
        td_quote = _unb64url(doc["td_quote"], "td_quote") if "td_quote" in doc else None
        return AzureEvidence(_unb64url(doc.get("hcl_report"), "hcl_report"), message, signature, pcrs, td_quote)
    if "quote" in doc and "report" in doc:
        message, signature, pcrs = _quote(doc["quote"])
        extras = {}
        if isinstance(doc.get("vcek"), str):
            extras["vcek"] = doc["vcek"].encode()
        return AzureEvidence(_bytes(doc["report"], "report"), message, signature, pcrs, None, extras)
    raise EvidenceError("Azure evidence has neither 'tpm_quote' nor 'quote'/'report'")
