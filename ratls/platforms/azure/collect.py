"""Collect Azure confidential VM evidence inside the guest with tpm2-tools (the 'azure' extra
documents them; they are Debian/RHEL packages, not Python):

- HCL report: ``tpm2_nvread -C o 0x01400001``
- TPM quote over the RA-TLS binding with the HCL attestation key (persistent handle
  0x81000003), sha256 PCRs 0-23: ``tpm2_quote``
- TDX: the TD quote for the HCL's TDREPORT from the Azure instance metadata service.
- SEV-SNP: the VCEK and chain from the instance metadata service (THIM), so verifiers need not
  reach AMD's KDS.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ...errors import CollectionError, ConfigError, EvidenceError
from ..snp.abi import Endorsement
from .evidence import PCR_COUNT, AzureEvidence
from .hcl import REPORT_TYPE_TDX, parse_hcl_report
from .tpm import parse_tpm_quote

HCL_REPORT_INDEX = "0x01400001"
AK_HANDLE = "0x81000003"
IMDS_TD_QUOTE_URL = "http://169.254.169.254/acc/tdquote"
IMDS_THIM_URL = "http://169.254.169.254/metadata/THIM/amd/certification"
Runner = Callable[[list[str], Path], None]


def run_tpm2(args: list[str], workdir: Path) -> None:
    """Run one tpm2-tools command; output files land in *workdir*."""
    if shutil.which(args[0]) is None:
        raise ConfigError(f"{args[0]} is not installed", hint="install tpm2-tools (apt install tpm2-tools) in the "
                                                              "confidential VM image")
    try:
        proc = subprocess.run(args, cwd=workdir, capture_output=True, timeout=60, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CollectionError(f"{args[0]} did not finish within 60 s", hint="is the vTPM busy or hung?") from None
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip()[-400:]
        raise CollectionError(f"{' '.join(args[:2])} failed with exit {proc.returncode}: {tail}",
                              hint="the process needs access to /dev/tpmrm0 (tss group or root)")


def _http(url: str, *, body: bytes | None = None, timeout: float = 10.0) -> bytes:
    headers = {"Metadata": "true"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"metadata endpoint '{url}' must be an http(s) URL")
    req = urllib.request.Request(url, data=body, headers=headers,  # noqa: S310 - scheme checked above
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - fixed metadata endpoint
            return bytes(resp.read())
    except OSError as exc:
        raise CollectionError(f"instance metadata request to {url} failed: {exc}",
                              hint="this only works inside an Azure confidential VM") from None


def fetch_td_quote(tdreport: bytes, url: str = IMDS_TD_QUOTE_URL) -> bytes:
    body = json.dumps({"report": base64.urlsafe_b64encode(tdreport).rstrip(b"=").decode()}).encode()
    try:
        quote = json.loads(_http(url, body=body))["quote"]
        return base64.urlsafe_b64decode(quote + "=" * (-len(quote) % 4))
    except (ValueError, KeyError, TypeError):
        raise CollectionError(f"{url} did not return a TD quote") from None


def fetch_vcek(url: str = IMDS_THIM_URL) -> dict[str, bytes]:
    try:
        doc = json.loads(_http(url))
        return {Endorsement.VCEK: doc["vcekCert"].encode(), Endorsement.CHAIN: doc["certificateChain"].encode()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CollectionError(f"{url} did not return vcekCert and certificateChain") from None


def collect_vtpm(report_data: bytes, *, run: Runner = run_tpm2, td_quote_url: str | None = IMDS_TD_QUOTE_URL,
                 ) -> AzureEvidence:
    if len(report_data) != 64:
        raise CollectionError(f"report_data must be 64 bytes, got {len(report_data)}")
    with tempfile.TemporaryDirectory(prefix="ratls-vtpm-") as tmp:
        work = Path(tmp)
        run(["tpm2_nvread", "-C", "o", "-o", "hcl.bin", HCL_REPORT_INDEX], work)
        run(["tpm2_quote", "-c", AK_HANDLE, "-l", "sha256:" + ",".join(map(str, range(PCR_COUNT))),
             "-q", report_data.hex(), "-m", "quote.msg", "-s", "quote.sig", "-f", "plain",
             "-o", "pcrs.bin", "-F", "values", "-g", "sha256"], work)
        try:
            hcl_raw = (work / "hcl.bin").read_bytes()
            message = (work / "quote.msg").read_bytes()
            signature = (work / "quote.sig").read_bytes()
            pcr_blob = (work / "pcrs.bin").read_bytes()
        except OSError as exc:
            raise CollectionError(f"tpm2-tools did not write {exc.filename}") from None
    if len(pcr_blob) != 32 * PCR_COUNT:
        raise CollectionError(f"tpm2_quote wrote {len(pcr_blob)} bytes of PCR values, expected {32 * PCR_COUNT}")
    try:
        hcl = parse_hcl_report(hcl_raw)
        quote = parse_tpm_quote(message)
    except EvidenceError as exc:
        raise CollectionError(f"the vTPM returned unusable evidence: {exc.message}") from None
    if quote.extra_data != report_data:
        raise CollectionError("the TPM quote does not carry the requested qualifying data",
                              hint="another process may have swapped the quote files; retry")
    td_quote = None
    if hcl.report_type == REPORT_TYPE_TDX:
        if td_quote_url is None:
            raise CollectionError("this is a TDX confidential VM but no TD quote source is configured")
        td_quote = fetch_td_quote(hcl.hw_report, td_quote_url)
    pcrs = tuple(pcr_blob[i * 32:(i + 1) * 32] for i in range(PCR_COUNT))
    return AzureEvidence(hcl_raw, message, signature, pcrs, td_quote)
