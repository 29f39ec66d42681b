"""TDX collateral (TCB info, QE identity, CRLs and their issuer chains) for a quote.

The gateway embeds collateral in its certificate so clients can verify offline. Collateral is
fetched from a configured PCCS/PCS with dcap-qvl when online and cached per FMSPC until its
``nextUpdate``; in offline mode only the cache (or a file the operator placed there) is used.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from datetime import datetime, timedelta
from pathlib import Path

from ...errors import CollectionError
from ...evidence import FetchFailed
from ...fileutil import write_atomic
from ...trust import Trust

log = logging.getLogger(__name__)
COLLATERAL_LABEL = "tdx-collateral"  # the endorsement (CMW record) that carries it
# Collateral this close to its nextUpdate is refreshed rather than served (and certificates
# carrying it are rotated), so no client ever receives collateral that expires in its hands.
COLLATERAL_REFRESH_MARGIN = timedelta(hours=1)


def serve_until(endorsements: dict[str, bytes]) -> datetime | None:
    """When evidence carrying this collateral should no longer be presented (see the margin)."""
    collateral = endorsements.get(COLLATERAL_LABEL)
    stale = next_update(collateral) if collateral is not None else None
    return stale - COLLATERAL_REFRESH_MARGIN if stale is not None else None


def fmspc_of(quote: bytes) -> str:
    """FMSPC from the PCK leaf's SGX extension (needs dcap-qvl's extension parser)."""
    import dcap_qvl

    return str(dcap_qvl.parse_quote(quote).fmspc())


def next_update(collateral_json: bytes) -> datetime | None:
    """The earliest ``nextUpdate`` of the TCB info and QE identity: when the collateral goes stale."""
    try:
        doc = json.loads(collateral_json)
        stamps = [json.loads(doc[k])["nextUpdate"] for k in ("tcb_info", "qe_identity")]
        return min(datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps)
    except (ValueError, KeyError, TypeError):
        return None


class CollateralCache:
    """Collateral by FMSPC: cache directory first, then the PCCS unless offline."""

    def __init__(self, *, cache_dir: Path | None, pccs_url: str | None, offline: bool) -> None:
        self.cache_dir, self.pccs_url, self.offline = cache_dir, pccs_url, offline

    def _path(self, fmspc: str) -> Path | None:
        return self.cache_dir / f"tdx-collateral-{fmspc.lower()}.json" if self.cache_dir else None

    def get(self, quote: bytes, fmspc: str, now: datetime) -> bytes:
        path = self._path(fmspc)
        if path is not None and path.is_file():
            data = path.read_bytes()
            stale = next_update(data)
            if stale is not None and stale - COLLATERAL_REFRESH_MARGIN > now:
                return data
            log.info("cached TDX collateral for FMSPC %s is stale (nextUpdate %s)", fmspc, stale)
        if self.offline or not self.pccs_url:
            raise CollectionError(f"no current TDX collateral for FMSPC {fmspc} and fetching is off",
                                  hint=f"set identity.tdx.pccs_url and offline: false, or place a "
                                       f"QuoteCollateralV3 JSON at {path}")
        data = self._fetch(quote)
        if path is not None:
            write_atomic(path, data)
        return data

    def _fetch(self, quote: bytes) -> bytes:
        try:
            import dcap_qvl
        except ImportError:
            raise CollectionError("dcap-qvl is not installed, so collateral cannot be fetched",
                                  hint="install the 'tdx' extra") from None
        url = self.pccs_url

        async def fetch() -> object:
            # dcap-qvl's binding needs a running loop when it is called, not only when awaited
            return await dcap_qvl.get_collateral(url, quote)

        try:
            # a private thread, so this works whether or not the caller runs an event loop
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                collateral = pool.submit(asyncio.run, fetch()).result()
        except (ValueError, RuntimeError) as exc:
            raise CollectionError(f"fetching TDX collateral from {self.pccs_url} failed: {exc}",
                                  hint="check the PCCS URL and network, or run offline with a cached file") from None
        return str(collateral.to_json()).encode()


def collateral_for_verifier(quote: bytes, endorsements: dict[str, bytes], trust: Trust,
                            now: datetime) -> bytes | FetchFailed | None:
    """The collateral a verifier uses: what it brought, else what the evidence carries, else
    (only when the caller allowed network access) fetched from the PCCS and cached. None when
    there is none and fetching is off; FetchFailed (why, and what to do) when fetching failed."""
    if trust.tdx_collateral is not None:
        return trust.tdx_collateral
    carried = endorsements.get(COLLATERAL_LABEL)
    if carried is not None or trust.kds_offline:
        return carried
    try:
        fmspc = fmspc_of(quote)
    except ImportError:
        return FetchFailed("dcap-qvl is not installed, so collateral cannot be fetched",
                           hint="install the 'tdx' extra (pip install 'ratls-gateway[tdx]')")
    except ValueError as exc:
        return FetchFailed(f"the quote's PCK certificate names no FMSPC to fetch collateral for: {exc}")
    try:
        cache = CollateralCache(cache_dir=trust.kds_cache_dir, pccs_url=trust.pccs_url, offline=False)
        return cache.get(quote, fmspc, now)
    except CollectionError as exc:
        log.warning("could not fetch TDX collateral: %s", exc)
        return FetchFailed.from_error(exc)
