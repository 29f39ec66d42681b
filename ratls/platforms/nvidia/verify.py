"""NVIDIA GPU evidence authenticity: the SPDM report, its freshness, and the device chain.
No RIMs, no policy here.

Every check is named and always recorded (``gpu.parse``, ``gpu.nonce``, ``gpu.fwid``,
``gpu.chain``, ``gpu.signature``): a failure never hides what the other checks found, and
``VerifiedGpu.authentic`` is false as soon as one failed. Only an unreadable report stops
early, with just ``gpu.parse``: nothing else can be said about bytes that are not a report.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ...appraisal import Check, failed, passed
from ...errors import EvidenceError, UsageError
from ...x509util import X509_ERRORS, force_parse
from .abi import decode_report_input, parse_report
from .certs import arch_of, chip_name, cn, leaf_fwid, parse_chain_pem, ueid, verify_chain
from .types import NONCE_LEN, SIGNATURE_LEN, GpuReport, VerifiedGpu

PARSE, NONCE, FWID, CHAIN, SIGNATURE = "gpu.parse", "gpu.nonce", "gpu.fwid", "gpu.chain", "gpu.signature"
_HALF = SIGNATURE_LEN // 2


def verify_gpu_evidence(label: str, raw_report: bytes, chain: Sequence[x509.Certificate] | bytes,
                        expected_nonce: bytes | None, roots: Sequence[x509.Certificate], now: datetime,
                        simulated: bool = False) -> VerifiedGpu:
    """Verify one GPU's report (raw, hex or base64 bytes) and its leaf-first chain (PEM bytes or
    certificates) against *roots* (the only trust anchors) at *now*."""
    if now.tzinfo is None:
        raise UsageError("verify_gpu_evidence needs a timezone-aware 'now'")
    result = VerifiedGpu(label=label, checks=[], simulated=simulated)
    try:
        report = parse_report(decode_report_input(raw_report))
    except EvidenceError as exc:
        result.checks.append(failed(PARSE, str(exc)))
        return result
    result.report = report
    result.checks.append(passed(PARSE, _parse_detail(report)))
    certs, chain_error = _load_chain(chain)
    leaf = certs[0] if certs else None
    result.checks.append(check_nonce(report, expected_nonce))
    result.checks.append(check_fwid(report, leaf, chain_error))
    result.checks.append(failed(CHAIN, chain_error) if chain_error else verify_chain(certs, roots, now))
    result.checks.append(check_signature(report, leaf, chain_error))
    _identify(result, certs)
    return result


def _parse_detail(report: GpuReport) -> str:
    o = report.opaque
    fwid = "with FWID" if o.fwid is not None else "no FWID"
    return (f"SPDM {report.spdm_version >> 4}.{report.spdm_version & 0xF} GET_MEASUREMENTS report, "
            f"{len(report.raw)} bytes, {len(report.blocks)} measurement blocks, driver {o.driver_version}, "
            f"VBIOS {o.vbios_version}, {fwid}")


def _load_chain(chain: Sequence[x509.Certificate] | bytes) -> tuple[list[x509.Certificate], str | None]:
    """The certificates, every field decoded (so later checks meet no lazy decoding error), or why not."""
    try:
        if isinstance(chain, bytes | bytearray):
            return parse_chain_pem(bytes(chain)), None
        return [force_parse(c, f"GPU chain certificate {i}") for i, c in enumerate(chain)], None
    except EvidenceError as exc:
        return [], f"the certificate chain is unreadable: {exc}"


def check_nonce(report: GpuReport, expected: bytes | None) -> Check:
    """The request nonce (the verifier's challenge) equals *expected*, compared in constant time.
    The response nonce is the GPU's own and binds nothing."""
    got = report.request_nonce.hex()
    if expected is None:
        return failed(NONCE, f"no expected nonce was given, so the report (request nonce {got}) may be a replay")
    if len(expected) != NONCE_LEN:
        return failed(NONCE, f"the expected nonce is {len(expected)} bytes; GPU nonces are {NONCE_LEN}")
    if not hmac.compare_digest(report.request_nonce, expected):
        return failed(NONCE, f"request nonce {got} is not the expected {expected.hex()}: stale or replayed report")
    return passed(NONCE, f"request nonce {got} is the expected challenge")


def check_fwid(report: GpuReport, leaf: x509.Certificate | None, chain_error: str | None = None) -> Check:
    """The firmware id in the report (opaque field 20) equals the one the leaf certifies."""
    reported = report.opaque.fwid
    if reported is None:
        return passed(FWID, "not applicable (driver sends no FWID)")
    if leaf is None:
        why = chain_error or "no leaf certificate was given"
        return failed(FWID, f"the report has FWID {reported.hex()} but {why}")
    try:
        certified, _ = leaf_fwid(leaf)
    except (EvidenceError, *X509_ERRORS) as exc:
        return failed(FWID, f"the FWID extension of {cn(leaf)} is malformed: {exc}")
    if certified is None:
        return failed(FWID, f"the report has FWID {reported.hex()} but the leaf {cn(leaf)} certifies none "
                            "(not a GPU signing leaf, or the leaf is missing)")
    if not hmac.compare_digest(certified, reported):
        return failed(FWID, f"report FWID {reported.hex()} differs from {certified.hex()} certified by {cn(leaf)}")
    return passed(FWID, f"report FWID {reported.hex()} is the one {cn(leaf)} certifies")


def check_signature(report: GpuReport, leaf: x509.Certificate | None, chain_error: str | None = None) -> Check:
    """ECDSA P-384/SHA-384 by the leaf key over every byte before the last 96 (request included)."""
    if leaf is None:
        return failed(SIGNATURE, chain_error or "no leaf certificate was given to verify the signature with")
    try:
        key = leaf.public_key()
    except X509_ERRORS as exc:
        return failed(SIGNATURE, f"the key of {cn(leaf)} is unreadable: {exc}")
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        return failed(SIGNATURE, f"the key of {cn(leaf)} is not an EC P-384 key")
    r = int.from_bytes(report.signature[:_HALF], "big")
    s = int.from_bytes(report.signature[_HALF:], "big")
    try:
        key.verify(encode_dss_signature(r, s), report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return failed(SIGNATURE, f"the signature over bytes 0..{len(report.signed_bytes) - 1} does not verify with "
                                 f"the key of {cn(leaf)}: the report was altered or another GPU signed it")
    return passed(SIGNATURE, f"ECDSA P-384/SHA-384 signature verifies with the key of {cn(leaf)}")


def _identify(result: VerifiedGpu, certs: list[x509.Certificate]) -> None:
    """Chip, architecture and UEID as the chain states them (trusted only if the checks passed)."""
    if not certs:
        return
    try:
        _, hint = leaf_fwid(certs[0])
    except (EvidenceError, *X509_ERRORS):
        hint = None
    result.chip = chip_name(certs)
    result.arch = arch_of(result.chip, hint)
    result.ueid = ueid(certs[0])
