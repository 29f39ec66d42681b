"""Azure confidential VM evidence: hardware report -> HCL runtime data -> vTPM attestation key
-> TPM quote -> PCRs. Each link is a named check.

1. The hardware evidence verifies on its own (SNP report through the SNP verifier; TDX through
   the TD quote and its collateral).
2. REPORT_DATA[0:32] = SHA-256(HCL runtime data) and REPORT_DATA[32:64] = 0: the runtime data,
   and the attestation key in it, come from this confidential VM's paravisor.
3. The TPM quote is signed by that attestation key; its extraData is what the caller binds
   (the RA-TLS claims digest); its PCR digest equals SHA-256 over the reported PCR values.
4. Version 2 evidence only: the runtime data's user-data begins with that same extraData, so
   the binding is also covered by the hardware report itself.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from ...appraisal import Check, failed, passed
from ...errors import EvidenceError
from ...evidence import VerifiedEvidence
from .evidence import AzureEvidence
from .hcl import HclReport, tdreport_report_data
from .tpm import ALG_SHA256, TpmQuote, parse_tpm_quote, pcr_digest, signature_bytes, verify_quote_signature


@dataclass(frozen=True)
class AzureParsed:
    """What appraisal needs: the hardware report (typed), the HCL report and the TPM quote."""

    hw: Any  # SnpReport or TdxQuote
    hcl: HclReport
    quote: TpmQuote | None
    pcrs: dict[int, bytes]  # only PCRs the signed quote covers


def check_runtime_binding(hcl: HclReport, hw_report_data: bytes) -> Check:
    digest = hashlib.sha256(hcl.var_data).digest()
    if hmac.compare_digest(hw_report_data[:32], digest) and not any(hw_report_data[32:]):
        return passed("azure.hcl-binding", "hardware REPORT_DATA = SHA-256(HCL runtime data) || zeros")
    return failed("azure.hcl-binding", "hardware REPORT_DATA does not commit to the HCL runtime data: the "
                                       "attestation key does not belong to this VM's hardware report")


def check_user_data(hcl: HclReport, bound: bytes) -> Check:
    """Version 2: the HCL runtime data's user-data (hex) begins with *bound*, the TPM quote's
    extraData (trustee's verifier checks the same: user-data[0:len] == report data)."""
    text = hcl.runtime.get("user-data")
    try:
        user = bytes.fromhex(text) if isinstance(text, str) else None
    except ValueError:
        user = None
    if user is None:
        return failed("azure.user-data", "version 2 evidence, but the HCL runtime data carries no hex user-data")
    if bound and hmac.compare_digest(user[:len(bound)], bound):
        return passed("azure.user-data", "the HCL runtime data's user-data begins with the bound report data")
    return failed("azure.user-data", "version 2 evidence, but the HCL runtime data's user-data does not begin with "
                                     "the report data the TPM quote binds: the hardware report was made for "
                                     "another binding")


def verify_vtpm(ev: AzureEvidence, hcl: HclReport, hw: VerifiedEvidence) -> VerifiedEvidence:
    """Add the Azure links to an already verified hardware report; returns the combined result."""
    checks = list(hw.checks)
    checks.append(check_runtime_binding(hcl, hw.report_data))
    quote: TpmQuote | None = None
    covered: dict[int, bytes] = {}
    try:
        ak = hcl.attestation_key()
        checks.append(passed("azure.attestation-key", f"HCLAkPub RSA-{ak.key_size} from the HCL runtime data"))
    except EvidenceError as exc:
        checks.append(failed("azure.attestation-key", exc.message))
        ak = None
    try:
        quote = parse_tpm_quote(ev.tpm_message)
    except EvidenceError as exc:
        checks.append(failed("azure.tpm-quote", exc.message))
    if quote is not None and ak is not None:
        ok = verify_quote_signature(quote, signature_bytes(ev.tpm_signature), ak)
        checks.append((passed if ok else failed)(
            "azure.tpm-quote-signature", "HCLAkPub signed the TPM quote (RSASSA-PKCS1-v1_5, SHA-256)" if ok else
            "the TPM quote signature does not verify with HCLAkPub: the quote was altered or signed by another key"))
    if quote is not None:
        pcrs = ev.pcr_map()
        digest = pcr_digest(quote, pcrs)
        if digest is None:
            banks = ", ".join(hex(s.hash_alg) for s in quote.selections)
            checks.append(failed("azure.pcr-digest", f"the quote selects PCRs outside the reported sha256 bank "
                                                     f"({banks})"))
        elif hmac.compare_digest(digest, quote.pcr_digest):
            covered = {i: pcrs[i] for s in quote.selections if s.hash_alg == ALG_SHA256 for i in s.indices}
            checks.append(passed("azure.pcr-digest", f"PCR values match the quoted digest ({len(covered)} PCRs)"))
        else:
            checks.append(failed("azure.pcr-digest", "the reported PCR values do not hash to the quoted PCR "
                                                     "digest: a PCR value was altered"))
    if ev.version >= 2:
        checks.append(check_user_data(hcl, quote.extra_data if quote is not None else b""))
    measurements = dict(hw.measurements)
    measurements.update({f"pcr{i}": v.hex() for i, v in sorted(covered.items())})
    summary = {**hw.summary, "evidence_version": ev.version, "hcl_version": hcl.version,
               "vm_configuration": hcl.vm_configuration()}
    if quote is not None:
        summary["tpm"] = {"extra_data": quote.extra_data.hex(), "reset_count": quote.reset_count,
                          "restart_count": quote.restart_count, "firmware_version": f"{quote.firmware_version:#x}"}
    return VerifiedEvidence(platform=hw.platform, report_data=quote.extra_data if quote else b"", checks=checks,
                            parsed=AzureParsed(hw.parsed, hcl, quote, covered), simulated=False,
                            measurements=measurements, tcb=dict(hw.tcb), summary=summary)


def check_tdreport_matches_quote(hcl: HclReport, quote_report_data: bytes) -> Check:
    ok = hmac.compare_digest(tdreport_report_data(hcl.hw_report), quote_report_data)
    return (passed if ok else failed)("azure.tdreport-match", "the HCL TDREPORT and the TD quote carry the same "
                                      "REPORTDATA" if ok else "the TD quote was not produced from the HCL's "
                                      "TDREPORT (REPORTDATA differs)")
