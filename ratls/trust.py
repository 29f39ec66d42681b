"""Verifier-side trust settings shared by all platforms (each platform reads what it needs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Trust:
    """What the verifier trusts beyond the shipped vendor roots.

    ``simulated_roots``: SHA-256 fingerprints of simulated roots the caller pinned (from the
    policy); simulated evidence is refused unless its root is listed. ``crls``: PEM/DER CRLs.
    ``kds_offline``: never fetch endorsements from the network (the default).
    ``signature_cache``: a per-process cache of verified certificate signatures (None = off).
    ``tdx_collateral``: TDX collateral the verifier brings instead of what the evidence carries.
    ``pccs_url``: where TDX collateral is fetched when evidence carries none and ``kds_offline``
    is False (the same switch as for AMD KDS: network access is opt-in).
    """

    simulated_roots: tuple[str, ...] = ()
    crls: list[bytes] = field(default_factory=list)
    require_crl: bool = False
    kds_offline: bool = True
    kds_cache_dir: Path | None = None
    signature_cache: Any = None
    tdx_collateral: bytes | None = None  # QuoteCollateralV3 JSON the verifier supplies (overrides embedded)
    pccs_url: str = "https://api.trustedservices.intel.com"  # TDX collateral source when not offline
    # NVIDIA RIMs a verifier keeps itself (by RIM id), used when a GPU's evidence staples none;
    # NVIDIA's RIM service is asked only when kds_offline is False (the same opt-in as AMD KDS).
    nvidia_rim_dir: Path | None = None
    # reference documents by ID (RIMs) the verifier already holds, e.g. fetched from the server
    # under verification (ratls.client.references); each is still verified like any other
    device_references: dict[str, bytes] = field(default_factory=dict)
