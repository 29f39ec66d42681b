"""``ratls evidence verify`` for device evidence (``--platform nvidia-gpu``): one device's raw
report and chain, optionally its reference values and a policy."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import registry
from .appraisal import Appraisal
from .devices import DeviceEvidence
from .errors import EvidenceError, UnreadableEvidence, UsageError
from .policy import Policy
from .trust import Trust


def _nonce(text: str | None) -> bytes:
    if text is None:
        raise UsageError("--nonce is required for GPU evidence: the 32-byte challenge the report must carry",
                         hint="give the nonce your verifier sent, as 64 hex digits")
    try:
        nonce = bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"--nonce: '{text}' is not hex") from None
    if len(nonce) != 32:
        raise UsageError(f"--nonce: {len(nonce)} bytes, an SPDM nonce is 32 (64 hex digits)")
    return nonce


def device_evidence(kind: registry.DeviceType, args: argparse.Namespace, read: Any) -> DeviceEvidence:
    """The device record as a certificate would carry it, from the caller's files. Input that is
    not a report or a chain at all is bad input (exit 2), never a verdict."""
    from .platforms.nvidia.abi import decode_report_input, parse_report
    from .platforms.nvidia.certs import parse_chain_pem
    from .platforms.nvidia.device import Endorsement
    raw = decode_report_input(read(args.report, "GPU report"))
    try:
        parse_report(raw)
    except UnreadableEvidence:
        raise  # bytes that are no SPDM report at all: bad input (exit 2)
    except EvidenceError:
        pass  # a malformed report is a verdict: the verifier records it as a failed gpu.parse
    if not args.chain:
        raise UsageError("--chain is required for GPU evidence: the device certificate chain, leaf-first PEM")
    chain = read(args.chain, "device certificate chain")
    try:
        parse_chain_pem(chain)
    except EvidenceError as exc:
        raise UsageError(f"--chain '{args.chain}': {exc}", hint="give the device chain as leaf-first PEM") from None
    endorsements = {Endorsement.CHAIN: chain}
    for flag, label in ((args.driver_rim, Endorsement.DRIVER_RIM), (args.vbios_rim, Endorsement.VBIOS_RIM)):
        if flag:
            endorsements[label] = read(flag, "RIM")
    if kind.simulated and args.sim_dir:
        from .platforms.nvidia.sim import load_or_create, sim_gpu_dir
        endorsements.update(load_or_create(sim_gpu_dir(Path(args.sim_dir))).endorsements())
    return DeviceEvidence("gpu0", kind.media_type, raw, endorsements)


def verify_device_evidence(kind: registry.DeviceType, args: argparse.Namespace, *, policy: Policy | None,
                           trust: Trust, now: Any, read: Any) -> Appraisal:
    device = device_evidence(kind, args, read)
    nonce = _nonce(args.nonce)
    verified = kind.verify(device, nonce, {}, trust, now)
    appraisal = Appraisal(platform=kind.name, simulated=kind.simulated, policy_applied=policy is not None)
    appraisal.add(verified.checks)
    appraisal.devices[device.label] = kind.summary(verified)
    if policy is not None:
        appraisal.add(kind.appraise([verified], policy))
    return appraisal
