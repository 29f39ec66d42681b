"""TDX collection through a fake configfs-tsm tree (provider tdx_guest) answered by the
simulated quote chain, and the collateral cache the gateway embeds from."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ratls.errors import CollectionError
from ratls.platforms.tdx.abi import parse_quote
from ratls.platforms.tdx.collateral import CollateralCache, next_update
from ratls.platforms.tdx.platform import COLLATERAL_LABEL, TdxPlatform, fmspc_of
from ratls.testing.fake_tsm import FakeTsm

REPORT_DATA = bytes(range(64))


def _tsm(tmp_path: Path, chain, *, provider: str = "tdx_guest", pad: int = 0, lie: bool = False):  # type: ignore[no-untyped-def]
    def respond(data: bytes, _level: int | None) -> tuple[bytes, bytes | None]:
        quote = chain.sign_quote(chain.body(bytes(64) if lie else data))
        return quote + bytes(pad), None

    return FakeTsm(tmp_path / "tsm", respond, provider=provider)


def test_collect_writes_inblob_and_reads_the_quote(tmp_path: Path, sim_tdx_chain) -> None:  # type: ignore[no-untyped-def]
    tsm = _tsm(tmp_path, sim_tdx_chain, pad=70)
    ev = TdxPlatform(tsm_root=tsm.root, fs=tsm).collect(REPORT_DATA)
    quote = parse_quote(ev.raw)
    assert quote.body.report_data == REPORT_DATA
    assert quote.trailing == 0  # the kernel's padding is not carried into the certificate
    assert ev.endorsements == {}  # no collateral source configured
    assert tsm.entries_created and not any(tsm.root.iterdir())  # the entry was removed again


def test_wrong_provider_is_refused(tmp_path: Path, sim_tdx_chain) -> None:  # type: ignore[no-untyped-def]
    tsm = _tsm(tmp_path, sim_tdx_chain, provider="sev_guest")
    with pytest.raises(CollectionError, match="provider is 'sev_guest', expected 'tdx_guest'"):
        TdxPlatform(tsm_root=tsm.root, fs=tsm).collect(REPORT_DATA)


def test_quote_for_other_report_data_is_refused(tmp_path: Path, sim_tdx_chain) -> None:  # type: ignore[no-untyped-def]
    tsm = _tsm(tmp_path, sim_tdx_chain, lie=True)
    with pytest.raises(CollectionError, match="REPORTDATA is not the value written"):
        TdxPlatform(tsm_root=tsm.root, fs=tsm).collect(REPORT_DATA)


def test_garbage_outblob_is_refused(tmp_path: Path) -> None:
    tsm = FakeTsm(tmp_path / "tsm", lambda d, lvl: (b"\x04\x00garbage", None), provider="tdx_guest")
    with pytest.raises(CollectionError, match="not a TDX quote"):
        TdxPlatform(tsm_root=tsm.root, fs=tsm).collect(REPORT_DATA)


def test_racing_writer_is_detected(tmp_path: Path, sim_tdx_chain) -> None:  # type: ignore[no-untyped-def]
    tsm = _tsm(tmp_path, sim_tdx_chain)
    tsm.race_on_read = True
    with pytest.raises(CollectionError, match="another writer"):
        TdxPlatform(tsm_root=tsm.root, fs=tsm).collect(REPORT_DATA)


def test_collateral_from_cache_is_embedded(tmp_path: Path, sim_tdx_chain) -> None:  # type: ignore[no-untyped-def]
    tsm = _tsm(tmp_path, sim_tdx_chain)
    quote = sim_tdx_chain.sign_quote(sim_tdx_chain.body(REPORT_DATA))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"tdx-collateral-{fmspc_of(quote).lower()}.json").write_bytes(sim_tdx_chain.collateral)
    platform = TdxPlatform(tsm_root=tsm.root, fs=tsm, collateral=CollateralCache(cache_dir=cache, pccs_url=None,
                                                                                 offline=True))
    ev = platform.collect(REPORT_DATA)
    assert ev.endorsements[COLLATERAL_LABEL] == sim_tdx_chain.collateral


def test_offline_without_cached_collateral_says_where_to_put_it(tmp_path: Path, sim_tdx_chain) -> None:  # type: ignore[no-untyped-def]
    quote = sim_tdx_chain.sign_quote(sim_tdx_chain.body(REPORT_DATA))
    cache = CollateralCache(cache_dir=tmp_path, pccs_url="https://pccs.invalid", offline=True)
    with pytest.raises(CollectionError, match="fetching is off") as info:
        cache.get(quote, fmspc_of(quote), datetime.now(UTC))
    assert str(tmp_path) in str(info.value)


def test_stale_cached_collateral_is_not_used(tmp_path: Path, sim_tdx_chain) -> None:  # type: ignore[no-untyped-def]
    quote = sim_tdx_chain.sign_quote(sim_tdx_chain.body(REPORT_DATA))
    fmspc = fmspc_of(quote)
    (tmp_path / f"tdx-collateral-{fmspc.lower()}.json").write_bytes(sim_tdx_chain.collateral)
    stale_at = next_update(sim_tdx_chain.collateral)
    assert stale_at is not None
    cache = CollateralCache(cache_dir=tmp_path, pccs_url=None, offline=True)
    assert cache.get(quote, fmspc, stale_at - timedelta(days=1)) == sim_tdx_chain.collateral
    with pytest.raises(CollectionError):
        cache.get(quote, fmspc, stale_at + timedelta(seconds=1))


def test_unreachable_pccs_is_a_collection_error(tmp_path: Path, sim_tdx_chain) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    quote = sim_tdx_chain.sign_quote(sim_tdx_chain.body(REPORT_DATA))
    cache = CollateralCache(cache_dir=tmp_path, pccs_url=f"http://127.0.0.1:{port}", offline=False)
    with pytest.raises(CollectionError, match="fetching TDX collateral from"):
        cache.get(quote, fmspc_of(quote), datetime.now(UTC))


def test_next_update_of_garbage_is_none() -> None:
    assert next_update(b"{}") is None
    assert next_update(json.dumps({"tcb_info": "{}", "qe_identity": "{}"}).encode()) is None


def test_online_fetch_from_a_pccs_then_cache(tmp_path: Path, sim_tdx_chain) -> None:  # type: ignore[no-untyped-def]
    from ratls.testing.pccs import LoopbackPccs

    quote = sim_tdx_chain.sign_quote(sim_tdx_chain.body(REPORT_DATA))
    fmspc = fmspc_of(quote)
    with LoopbackPccs(sim_tdx_chain.collateral) as pccs:
        cache = CollateralCache(cache_dir=tmp_path / "cache", pccs_url=pccs.url, offline=False)
        got = cache.get(quote, fmspc, datetime.now(UTC))
        assert any(r.startswith(f"/tdx/certification/v4/tcb?fmspc={fmspc}") for r in pccs.requests)
        fetched = len(pccs.requests)
        assert cache.get(quote, fmspc, datetime.now(UTC)) == got
        assert len(pccs.requests) == fetched  # served from the cache while current
        pccs.fail = True
        stale = (next_update(got) or datetime.now(UTC)) + timedelta(seconds=1)
        with pytest.raises(CollectionError, match="HTTP 503"):
            cache.get(quote, fmspc, stale)
    doc = json.loads(got)
    assert doc["tcb_info"] == json.loads(sim_tdx_chain.collateral)["tcb_info"]
    assert (tmp_path / "cache" / f"tdx-collateral-{fmspc.lower()}.json").read_bytes() == got
