"""Azure vTPM evidence against the recorded vectors: every link verifies, and each mutation is
rejected by the check that names it."""

from __future__ import annotations

import base64
import json
import ssl
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ratls.appraisal import Appraisal
from ratls.errors import EvidenceError, UnreadableEvidence
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
    (b'{"version": 3, "tpm_quote": {}}', r"version 3 is not one this verifier reads \(1, 2\)"),
    (b'{"version": true, "tpm_quote": {}}', "version True"),
    (b'{"tpm_quote": {}}', "version None"),
    (b'{"version": 2, "tpm_quote": {"message": "00"}}', "lacks pcrs, signature"),
    (b'{"something": 1}', "neither"),
])
def test_malformed_evidence_is_named(raw: bytes, message: str) -> None:
    with pytest.raises(UnreadableEvidence, match=message) as info:
        parse_azure_evidence(raw)
    assert isinstance(info.value, EvidenceError) and info.value.hint


@pytest.fixture
def trustee_v2(azure: Path) -> Path:
    path = azure / "snp_milan_v2_trustee/evidence-v2.json"
    if not path.is_file():
        pytest.skip(f"trustee's version 2 Azure vector not found at {path} (it is trustee's "
                    "deps/verifier/test_data/az-snp-vtpm/evidence-v2.json at the commit azure/README.txt names)")
    return path


V2_REPORT_DATA = bytes.fromhex("982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9a"
                               "a398f647caa2338748cd0fd9f5f819ef")  # what trustee's test binds


def test_trustee_v2_evidence_verifies(trustee_v2: Path) -> None:
    a = _verify("azure-snp-vtpm", trustee_v2.read_bytes(), expected=V2_REPORT_DATA)
    assert a.ok, _failed(a)
    assert {"azure.user-data", "snp.report.signature", "snp.chain", "azure.tpm-quote-signature"} <= {
        c.name for c in a.checks if c.ok}
    assert a.evidence["evidence_version"] == 2 and a.evidence["product"] == "milan"
    assert a.measurements["pcr0"] == "84275b2f4312cd4fc6cbe6b152ad3c3683e513d9f1e23c34fca160c8cca7a6a7"


def test_trustee_v2_user_data_is_checked(trustee_v2: Path) -> None:
    doc = json.loads(trustee_v2.read_bytes())
    hcl = bytearray(base64.urlsafe_b64decode(doc["hcl_report"]))
    at = hcl.index(b'"user-data":"') + len(b'"user-data":"')
    hcl[at] = ord("0")  # user-data now differs from the TPM quote's extraData (and breaks the binding)
    doc["hcl_report"] = base64.urlsafe_b64encode(bytes(hcl)).decode()
    failed = _failed(_verify("azure-snp-vtpm", doc, expected=V2_REPORT_DATA))
    assert {"azure.user-data", "azure.hcl-binding"} <= set(failed)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_versioned_layout_reads_the_embedded_vcek(azure: Path) -> None:
    doc, ends = _milan(azure)
    vcek = ssl.PEM_cert_to_DER_cert(ends["vcek"].decode())
    a = _verify("azure-snp-vtpm", {**doc, "vcek": _b64url(vcek)})  # no endorsements beside it
    assert a.ok, _failed(a)
    assert a.evidence["evidence_version"] == 1


def test_version_2_layout_of_real_evidence_needs_its_user_data(azure: Path) -> None:
    # The recorded Milan pieces in trustee's version 2 layout: read and verified like version 1,
    # and refused only by the check version 2 adds (their user-data is zeros, not the binding).
    doc, ends = _milan(azure)
    vcek = ssl.PEM_cert_to_DER_cert(ends["vcek"].decode())
    a = _verify("azure-snp-vtpm", {**doc, "version": 2, "vcek": _b64url(vcek)})
    assert set(_failed(a)) == {"azure.user-data"}, _failed(a)
    assert a.evidence["evidence_version"] == 2
    tdx = json.loads((azure / "tdx_trustee/evidence-v1.json").read_bytes())
    assert {"azure.user-data", "tdx.collateral"} == set(_failed(_verify("azure-tdx-vtpm", {**tdx, "version": 2})))


def test_unreadable_evidence_raises_for_the_caller_and_is_a_verdict_when_presented(azure: Path) -> None:
    from ratls.cert import generate_key
    from ratls.issue import issue_certificate
    from ratls.pipeline import verify_certificate

    with pytest.raises(UnreadableEvidence, match="version 3"):
        _verify("azure-snp-vtpm", {"version": 3, "tpm_quote": {}})

    class Presents:  # a server whose certificate carries evidence in a layout nobody reads
        name, media_type, simulated = "azure-snp-vtpm", MEDIA_TYPE, False

        def collect(self, report_data: bytes) -> Evidence:
            return Evidence(self.name, self.media_type, b'{"version": 3, "tpm_quote": {}}')

    issued = issue_certificate(Presents(), generate_key("p256"), now=NOW)  # type: ignore[arg-type]
    appraisal, _ = verify_certificate(issued.cert, policy=None, now=NOW)
    assert [c.name for c in appraisal.failures] == ["evidence.parse"]


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
