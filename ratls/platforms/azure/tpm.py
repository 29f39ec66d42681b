"""TPM 2.0 quote (TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE) parsing and checks.

TPM 2.0 Part 2: TPMS_ATTEST = magic (0xff544347) | type (0x8018) | qualifiedSigner TPM2B_NAME |
extraData TPM2B_DATA | clockInfo (clock u64, resetCount u32, restartCount u32, safe u8) |
firmwareVersion u64 | TPMS_QUOTE_INFO {pcrSelect TPML_PCR_SELECTION, pcrDigest TPM2B_DIGEST}.
Big-endian throughout.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ...errors import EvidenceError

TPM_GENERATED = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018
ALG_SHA256 = 0x000B
HASH_ALGS = {0x0004: "sha1", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512"}


@dataclass(frozen=True)
class PcrSelection:
    hash_alg: int
    indices: tuple[int, ...]


@dataclass(frozen=True)
class TpmQuote:
    raw: bytes
    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    selections: tuple[PcrSelection, ...]
    pcr_digest: bytes


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int, field: str) -> bytes:
        if self.pos + n > len(self.data):
            raise EvidenceError(f"TPM quote is truncated at {field} (offset {self.pos})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "big")

    def sized(self, field: str) -> bytes:
        return self.take(self.uint(2, f"{field} size"), field)


def parse_tpm_quote(raw: bytes) -> TpmQuote:
    r = _Reader(raw)
    magic = r.uint(4, "magic")
    if magic != TPM_GENERATED:
        raise EvidenceError(f"TPM quote magic is {magic:#x}, not TPM_GENERATED_VALUE {TPM_GENERATED:#x}: "
                            "the structure was not produced by a TPM")
    kind = r.uint(2, "type")
    if kind != TPM_ST_ATTEST_QUOTE:
        raise EvidenceError(f"TPM attestation type {kind:#x} is not a quote ({TPM_ST_ATTEST_QUOTE:#x})")
    signer = r.sized("qualifiedSigner")
    extra = r.sized("extraData")
    clock = r.uint(8, "clock")
    reset_count = r.uint(4, "resetCount")
    restart_count = r.uint(4, "restartCount")
    safe = r.uint(1, "safe")
    firmware = r.uint(8, "firmwareVersion")
    count = r.uint(4, "pcrSelect count")
    if count > 8:
        raise EvidenceError(f"TPM quote selects {count} PCR banks; refusing more than 8")
    selections = []
    for i in range(count):
        alg = r.uint(2, f"pcrSelect[{i}].hash")
        bitmap = r.take(r.uint(1, f"pcrSelect[{i}].sizeofSelect"), f"pcrSelect[{i}].pcrSelect")
        indices = tuple(byte * 8 + bit for byte, bits in enumerate(bitmap) for bit in range(8) if bits >> bit & 1)
        selections.append(PcrSelection(alg, indices))
    digest = r.sized("pcrDigest")
    if r.pos != len(raw):
        raise EvidenceError(f"TPM quote has {len(raw) - r.pos} unexpected trailing bytes")
    return TpmQuote(raw, signer, extra, clock, reset_count, restart_count, bool(safe), firmware,
                    tuple(selections), digest)


def verify_quote_signature(quote: TpmQuote, signature: bytes, key: rsa.RSAPublicKey) -> bool:
    """Azure's HCL attestation key signs with RSASSA-PKCS1-v1_5 over SHA-256."""
    try:
        key.verify(signature, quote.raw, padding.PKCS1v15(), hashes.SHA256())
        return True
    except (InvalidSignature, ValueError):
        return False


def pcr_digest(quote: TpmQuote, pcrs: dict[int, bytes]) -> bytes | None:
    """SHA-256 over the selected PCR values in selection order (sha256 bank only)."""
    data = b""
    for sel in quote.selections:
        if sel.hash_alg != ALG_SHA256:
            return None
        for index in sel.indices:
            if index not in pcrs:
                return None
            data += pcrs[index]
    return hashlib.sha256(data).digest()


def signature_bytes(raw: bytes) -> bytes:
    """Accept a bare RSA signature or a marshalled TPMT_SIGNATURE (RSASSA, SHA-256)."""
    if len(raw) >= 6 and struct.unpack(">HH", raw[:4]) == (0x0014, ALG_SHA256):
        size = struct.unpack(">H", raw[4:6])[0]
        if len(raw) == 6 + size:
            return raw[6:]
    return raw
