"""Simulated roots: which one a piece of simulated evidence chains to, whether the caller
pinned it, and which one this machine's simulator has. Shared by both simulators and by
`ratls policy init`."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from ...appraisal import Check, failed, passed
from ...evidence import Evidence
from ...trust import Trust
from ...x509util import X509_ERRORS, fingerprint
from ..snp.abi import Endorsement


def pin_check(root: x509.Certificate | None, trust: Trust, *, what: str, missing: str) -> Check:
    """Simulated evidence counts only when the caller pinned its root (policy simulated.root_sha256)."""
    if root is None:
        return failed("sim.root", missing)
    fp = fingerprint(root)
    if fp in trust.simulated_roots:
        return passed("sim.root", f"SIMULATED {what} {fp} is pinned by the caller")
    return failed("sim.root", f"SIMULATED {what} {fp} is not pinned (policy simulated.root_sha256); refusing "
                              "simulated evidence")


def tdx_quote_root(pck_chain_pem: bytes) -> x509.Certificate | None:
    """The self-signed certificate ending a quote's PCK chain, if there is one."""
    try:
        certs = x509.load_pem_x509_certificates(pck_chain_pem)
    except X509_ERRORS:
        return None
    return certs[-1] if certs and certs[-1].subject == certs[-1].issuer else None


def simulated_root_sha256(evidence: Evidence) -> str | None:
    if evidence.platform == "sim" and Endorsement.ARK in evidence.endorsements:
        from ..snp.certs import load_certificate

        return fingerprint(load_certificate(evidence.endorsements[Endorsement.ARK], "simulated ARK"))
    if evidence.platform == "sim-tdx":
        from ..tdx.abi import parse_quote

        root = tdx_quote_root(parse_quote(evidence.raw).pck_chain_pem)
        return fingerprint(root) if root is not None else None
    return None


def local_root_sha256(platform: str, state_dir: Path) -> str | None:
    """The root `ratls sim root` prints for *state_dir* and *platform* (sim or sim-tdx), or None
    when that simulator has no chain there. Read-only: unlike `ratls sim root`, it never
    generates a chain, so "no local root" stays distinguishable from "a different one"."""
    if platform == "sim":
        from .chain import has_chain, load_chain

        return load_chain(state_dir).root_sha256 if has_chain(state_dir) else None
    if platform == "sim-tdx":
        from .tdx_chain import has_tdx_chain, load_tdx_chain, tdx_state_dir

        tdx = tdx_state_dir(state_dir)
        return load_tdx_chain(tdx).root_sha256 if has_tdx_chain(tdx) else None
    return None
