"""Azure vTPM evidence against the recorded vectors: every link verifies, and each mutation is
rejected by the check that names it."""

from __future__ import annotations

import base64
import json
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ratls.appraisal import Appraisal
from ratls.errors import EvidenceError
from ratls.evidence import Evidence
from ratls.pipeline import verify_evidence
from ratls.platforms.azure.evidence import parse_azure_evidence
from ratls.platforms.azure.hcl import VAR_DATA_OFFSET, parse_hcl_report
from ratls.platforms.azure.platform import MEDIA_TYPE
from ratls.platforms.azure.tpm import parse_tpm_quote
from ratls.policy import parse_policy

NOW = datetime(2025, 6, 1, tzinfo=UTC)
CHALLENGE = b"challenge"


@pytest.fixture(scope="module")
def azure(vectors: Path) -> Path:
    return vectors / "azure"


def _milan(azure: Path) -> tuple[dict, dict[str, bytes]]:  # type: ignore[type-arg]
    doc = {"version": 1, "tpm_quote": json.loads((azure / "snp_milan_trustee/tpm_quote.json").read_text()),
           "hcl_report": base64.urlsafe_b64encode((azure / "snp_milan_trustee/hcl_report.bin").read_bytes()).decode()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        certs = x509.load_pem_x509_certificates((azure / "snp_milan_trustee/vcek_ask_ark.pem").read_bytes())
    ends = {"vcek": certs[0].public_bytes(Encoding.PEM),
            "chain": b"".join(c.public_bytes(Encoding.PEM) for c in certs[1:])}
    return doc, ends


def _verify(platform: str, doc: dict | bytes, ends: dict[str, bytes] | None = None,  # type: ignore[type-arg]
            expected: bytes | None = CHALLENGE, policy: object = None) -> Appraisal:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return verify_evidence(Evidence(platform, MEDIA_TYPE, raw, ends or {}), policy=policy, now=NOW,  # type: ignore[arg-type]
                           expected_report_data=expected)


def _failed(a: Appraisal) -> dict[str, str]:
    return {c.name: c.detail for c in a.checks if not c.ok}


def test_milan_snp_vtpm_verifies(azure: Path) -> None:
    a = _verify("azure-snp-vtpm", *_milan(azure))
    assert a.ok, _failed(a)
    names = {c.name for c in a.checks}
    assert {"snp.report.signature", "azure.hcl-binding", "azure.attestation-key", "azure.tpm-quote-signature",
            "azure.pcr-digest", "binding.report-data"} <= names
    assert len([k for k in a.measurements if k.startswith("pcr")]) == 24
    assert a.evidence["vm_configuration"]["secure-boot"] is True


def test_genoa_recorded_evidence_shape_verifies(azure: Path) -> None:
    raw = (azure / "snp_genoa_trustee/evidence.json").read_bytes()
    extra = parse_azure_evidence(raw).tpm_message
    a = _verify("azure-snp-vtpm", raw, expected=parse_tpm_quote(extra).extra_data)
    assert a.ok, _failed(a)
    assert a.evidence["product"] == "genoa"


def test_tdx_vtpm_links_verify_and_missing_collateral_fails_closed(azure: Path) -> None:
    a = _verify("azure-tdx-vtpm", (azure / "tdx_trustee/evidence-v1.json").read_bytes())
    assert set(_failed(a)) == {"tdx.collateral"}, _failed(a)
    names = {c.name for c in a.checks if c.ok}
    assert {"tdx.quote-signature", "tdx.pck-chain", "azure.tdreport-match", "azure.hcl-binding",
            "azure.tpm-quote-signature", "azure.pcr-digest", "binding.report-data"} <= names


def test_binding_is_the_quote_extra_data(azure: Path) -> None:
    a = _verify("azure-snp-vtpm", *_milan(azure), expected=b"another nonce")
    assert "binding.report-data" in _failed(a)


def _with_hcl(doc: dict, mutate) -> dict:  # type: ignore[no-untyped-def, type-arg]
    raw = bytearray(base64.urlsafe_b64decode(doc["hcl_report"]))
    mutate(raw)
    return {**doc, "hcl_report": base64.urlsafe_b64encode(bytes(raw)).decode()}


def test_runtime_data_mutation_breaks_the_hcl_binding(azure: Path) -> None:
    doc, ends = _milan(azure)
    hcl = parse_hcl_report(base64.urlsafe_b64decode(doc["hcl_report"]))
    at = VAR_DATA_OFFSET + hcl.var_data.index(b'"vmUniqueId"') + 16

    def flip(raw: bytearray) -> None:
        raw[at] = ord("0") if raw[at] != ord("0") else ord("1")

    assert "azure.hcl-binding" in _failed(_verify("azure-snp-vtpm", _with_hcl(doc, flip), ends))


def test_hardware_report_mutation_breaks_the_snp_signature(azure: Path) -> None:
    doc, ends = _milan(azure)

    def flip(raw: bytearray) -> None:
        raw[0x20 + 0x90] ^= 1  # inside MEASUREMENT

    assert "snp.report.signature" in _failed(_verify("azure-snp-vtpm", _with_hcl(doc, flip), ends))


@pytest.mark.parametrize("offset", [10, 40, 60, 100])
def test_tpm_quote_mutation_breaks_its_signature(azure: Path, offset: int) -> None:
    doc, ends = _milan(azure)
    msg = bytearray(bytes.fromhex(doc["tpm_quote"]["message"]))
    msg[offset] ^= 1
    doc["tpm_quote"] = {**doc["tpm_quote"], "message": msg.hex()}
    failed = _failed(_verify("azure-snp-vtpm", doc, ends))
    assert "azure.tpm-quote-signature" in failed or "azure.tpm-quote" in failed


def test_signature_mutation(azure: Path) -> None:
    doc, ends = _milan(azure)
    sig = bytearray(bytes.fromhex(doc["tpm_quote"]["signature"]))
    sig[100] ^= 1
    doc["tpm_quote"] = {**doc["tpm_quote"], "signature": sig.hex()}
    assert "azure.tpm-quote-signature" in _failed(_verify("azure-snp-vtpm", doc, ends))


def test_pcr_value_mutation_breaks_the_digest(azure: Path) -> None:
    doc, ends = _milan(azure)
    pcrs = list(doc["tpm_quote"]["pcrs"])
    pcrs[7] = "00" * 32
    doc["tpm_quote"] = {**doc["tpm_quote"], "pcrs": pcrs}
    assert "azure.pcr-digest" in _failed(_verify("azure-snp-vtpm", doc, ends))


def test_snp_evidence_presented_as_tdx_is_refused(azure: Path) -> None:
    doc, ends = _milan(azure)
    a = _verify("azure-tdx-vtpm", doc, ends)
    assert "is a sev-snp report" in _failed(a)["azure.evidence"]
    policy = parse_policy({"version": 1, "platforms": ["azure-tdx-vtpm"], "tdx": {"mrtd": ["00" * 48]}})
    a = _verify("azure-tdx-vtpm", doc, ends, policy=policy)  # appraisal of unverified evidence: no crash
    assert not a.ok and "policy.azure" in _failed(a)


def test_pcr_policy(azure: Path) -> None:
    doc, ends = _milan(azure)
    pcr7 = doc["tpm_quote"]["pcrs"][7]
    report_measurement = _verify("azure-snp-vtpm", doc, ends).measurements["measurement"]
    base = {"version": 1, "platforms": ["azure-snp-vtpm"],
            "sev-snp": {"measurements": [report_measurement], "guest_policy": {"debug": False}}}
    good = parse_policy({**base, "vtpm": {"pcrs": {7: pcr7, 11: [doc["tpm_quote"]["pcrs"][11], "ab" * 32]}}})
    a = _verify("azure-snp-vtpm", doc, ends, policy=good)
    assert a.ok, _failed(a)
    bad = parse_policy({**base, "vtpm": {"pcrs": {7: "00" * 32}}})
    assert "policy.vtpm.pcr7" in _failed(_verify("azure-snp-vtpm", doc, ends, policy=bad))
    not_accepted = parse_policy({**base, "platforms": ["sev-snp"]})
    assert "policy.platform" in _failed(_verify("azure-snp-vtpm", doc, ends, policy=not_accepted))


@pytest.mark.parametrize(("raw", "message"), [
    (b"not json", "not JSON"),
    (b"[]", "JSON object"),
    (b'{"version": 2, "tpm_quote": {}}', "version 2"),
    (b'{"version": 1, "tpm_quote": {"message": "00"}}', "lacks pcrs, signature"),
    (b'{"something": 1}', "neither"),
])
def test_malformed_evidence_is_named(raw: bytes, message: str) -> None:
    with pytest.raises(EvidenceError, match=message):
        parse_azure_evidence(raw)


def test_truncated_hcl_report(azure: Path) -> None:
    raw = (azure / "snp_milan_trustee/hcl_report.bin").read_bytes()
    with pytest.raises(EvidenceError, match="at least"):
        parse_hcl_report(raw[:100])
    with pytest.raises(EvidenceError, match="HCLA"):
        parse_hcl_report(b"XXXX" + raw[4:])
    with pytest.raises(EvidenceError, match="truncated"):
        parse_hcl_report(raw[:VAR_DATA_OFFSET + 10])


def test_truncated_tpm_quote(azure: Path) -> None:
    msg = bytes.fromhex(json.loads((azure / "snp_milan_trustee/tpm_quote.json").read_text())["message"])
    for cut in (3, 6, 20, 60, len(msg) - 1):
        with pytest.raises(EvidenceError):
            parse_tpm_quote(msg[:cut])
    with pytest.raises(EvidenceError, match="TPM_GENERATED"):
        parse_tpm_quote(b"\x00" + msg[1:])
