"""Azure HCL (paravisor) attestation report, read from the vTPM NV index 0x01400001.

Layout: header {'HCLA', version, report_size, request_type, status, 3 reserved} (32 bytes) |
hardware report (1184 bytes: an SNP ATTESTATION_REPORT, or a 1024-byte TDX TDREPORT + padding) |
IGVM request data {data_size, version, report_type (2 SNP, 4 TDX), hash_type (1 SHA-256),
variable_data_size} | variable data: JSON with the HCL attestation key (JWK "HCLAkPub").

The hardware report's REPORT_DATA[0:32] is SHA-256 of the variable data, which is how the TPM
attestation key is tied to the hardware-signed report. Parsing only.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from ...errors import EvidenceError

HEADER = b"HCLA"
HW_REPORT_OFFSET = 0x20
HW_REPORT_SIZE = 1184
TDREPORT_SIZE = 1024
IGVM_OFFSET = 0x4C0
VAR_DATA_OFFSET = 0x4D4
REPORT_TYPE_SNP = 2
REPORT_TYPE_TDX = 4
HASH_SHA256 = 1
TDREPORT_REPORT_DATA_OFFSET = 0x80
AK_KID = "HCLAkPub"


@dataclass(frozen=True)
class HclReport:
    raw: bytes
    version: int
    report_type: int
    hw_report: bytes  # SNP report (1184) or TDREPORT (1024)
    var_data: bytes
    runtime: dict[str, Any]

    @property
    def kind(self) -> str:
        return {REPORT_TYPE_SNP: "sev-snp", REPORT_TYPE_TDX: "tdx"}[self.report_type]

    def attestation_key(self) -> rsa.RSAPublicKey:
        return jwk_rsa_key(self.runtime, AK_KID)

    def vm_configuration(self) -> dict[str, Any]:
        value = self.runtime.get("vm-configuration")
        return value if isinstance(value, dict) else {}


def _b64url(text: str, what: str) -> int:
    try:
        return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")
    except (ValueError, TypeError):
        raise EvidenceError(f"HCL runtime data: {what} is not base64url") from None


def jwk_rsa_key(runtime: dict[str, Any], kid: str) -> rsa.RSAPublicKey:
    keys = runtime.get("keys")
    if not isinstance(keys, list):
        raise EvidenceError("HCL runtime data has no 'keys' list")
    for jwk in keys:
        if isinstance(jwk, dict) and jwk.get("kid") == kid:
            if jwk.get("kty") != "RSA" or not isinstance(jwk.get("n"), str) or not isinstance(jwk.get("e"), str):
                raise EvidenceError(f"HCL runtime key {kid} is not an RSA JWK with n and e")
            try:
                key = rsa.RSAPublicNumbers(_b64url(jwk["e"], f"{kid}.e"), _b64url(jwk["n"], f"{kid}.n")).public_key()
            except ValueError as exc:
                raise EvidenceError(f"HCL runtime key {kid} is not a valid RSA key: {exc}") from None
            if key.key_size < 2048:
                raise EvidenceError(f"HCL runtime key {kid} is only {key.key_size} bits")
            return key
    raise EvidenceError(f"HCL runtime data has no key '{kid}'")


def parse_hcl_report(raw: bytes) -> HclReport:
    if len(raw) < VAR_DATA_OFFSET:
        raise EvidenceError(f"HCL report is {len(raw)} bytes; it needs at least {VAR_DATA_OFFSET}",
                            hint="read the whole NV index 0x01400001")
    if raw[:4] != HEADER:
        raise EvidenceError(f"HCL report does not start with 'HCLA' (got {raw[:4]!r})")
    version = struct.unpack_from("<I", raw, 4)[0]
    _data_size, _igvm_version, report_type, hash_type, var_size = struct.unpack_from("<5I", raw, IGVM_OFFSET)
    if report_type not in (REPORT_TYPE_SNP, REPORT_TYPE_TDX):
        raise EvidenceError(f"HCL report type {report_type} is neither SNP (2) nor TDX (4)")
    if hash_type != HASH_SHA256:
        raise EvidenceError(f"HCL runtime data hash type {hash_type} is not SHA-256 (1)")
    if VAR_DATA_OFFSET + var_size > len(raw):
        raise EvidenceError(f"HCL report is truncated: runtime data of {var_size} bytes does not fit")
    var_data = raw[VAR_DATA_OFFSET:VAR_DATA_OFFSET + var_size]
    try:
        runtime = json.loads(var_data)
    except (UnicodeDecodeError, ValueError):
        raise EvidenceError("HCL runtime data is not JSON") from None
    if not isinstance(runtime, dict):
        raise EvidenceError("HCL runtime data is not a JSON object")
    size = HW_REPORT_SIZE if report_type == REPORT_TYPE_SNP else TDREPORT_SIZE
    hw = raw[HW_REPORT_OFFSET:HW_REPORT_OFFSET + size]
    return HclReport(raw, version, report_type, hw, var_data, runtime)


def tdreport_report_data(tdreport: bytes) -> bytes:
    return tdreport[TDREPORT_REPORT_DATA_OFFSET:TDREPORT_REPORT_DATA_OFFSET + 64]
