"""KDS client against a real HTTP server on loopback (never the network)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ratls.errors import EvidenceError
from ratls.evidence import Evidence
from ratls.pipeline import verify_evidence
from ratls.platforms.snp.abi import Product, parse_report
from ratls.platforms.snp.kds import KdsClient
from ratls.platforms.snp.platform import MEDIA_TYPE
from ratls.trust import Trust


@pytest.fixture
def kds_server(vectors: Path) -> Iterator[tuple[str, list[str]]]:
    vcek = (vectors / "snp/turin_v5_openanolis-trustee/vcek.der").read_bytes()
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.path)
            if self.path.startswith("/vcek/v1/Turin/0910b4f884ff4ba9?"):
                self.send_response(200)
                self.end_headers()
                self.wfile.write(vcek)
            else:
                self.send_response(404)
                self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_vcek_url_turin_and_milan(vectors: Path) -> None:
    kds = KdsClient()
    turin = parse_report((vectors / "snp/turin_v5_openanolis-trustee/report.bin").read_bytes())
    assert kds.vcek_url(Product.TURIN, turin) == (
        "https://kdsintf.amd.com/vcek/v1/Turin/0910b4f884ff4ba9?fmcSPL=1&blSPL=3&teeSPL=2&snpSPL=5&ucodeSPL=97")
    milan = parse_report((vectors / "snp/milan_v5_gcp_teekit/report.bin").read_bytes())
    url = kds.vcek_url(Product.MILAN, milan)
    assert url.startswith("https://kdsintf.amd.com/vcek/v1/Milan/980cf7b6") and url.endswith(
        "?blSPL=4&teeSPL=0&snpSPL=27&ucodeSPL=222")


def test_offline_is_strict(vectors: Path) -> None:
    kds = KdsClient(offline=True)
    report = parse_report((vectors / "snp/turin_v5_openanolis-trustee/report.bin").read_bytes())
    with pytest.raises(EvidenceError, match="offline mode"):
        kds.fetch_vcek(Product.TURIN, report)


def test_fetch_then_cache(vectors: Path, kds_server: tuple[str, list[str]], tmp_path: Path) -> None:
    base, seen = kds_server
    report = parse_report((vectors / "snp/turin_v5_openanolis-trustee/report.bin").read_bytes())
    online = KdsClient(cache_dir=tmp_path, offline=False, base_url=base)
    first = online.fetch_vcek(Product.TURIN, report)
    assert len(seen) == 1
    offline = KdsClient(cache_dir=tmp_path, offline=True, base_url=base)
    assert offline.fetch_vcek(Product.TURIN, report) == first
    assert len(seen) == 1  # served from the cache


def test_http_error_is_explained(vectors: Path, kds_server: tuple[str, list[str]]) -> None:
    base, _ = kds_server
    report = parse_report((vectors / "snp/milan_v5_gcp_teekit/report.bin").read_bytes())
    with pytest.raises(EvidenceError, match="answered 404"):
        KdsClient(offline=False, base_url=base).fetch_vcek(Product.MILAN, report)


def test_verify_without_vcek_uses_kds_cache(vectors: Path, kds_server: tuple[str, list[str]],
                                            tmp_path: Path) -> None:
    base, _ = kds_server
    report = parse_report((vectors / "snp/turin_v5_openanolis-trustee/report.bin").read_bytes())
    KdsClient(cache_dir=tmp_path, offline=False, base_url=base).fetch_vcek(Product.TURIN, report)
    # The cache is keyed by URL; verification uses the default base URL, so pre-seed that key too.
    default = KdsClient(cache_dir=tmp_path)
    (tmp_path / default._cache_path(default.vcek_url(Product.TURIN, report)).name).write_bytes(
        (vectors / "snp/turin_v5_openanolis-trustee/vcek.der").read_bytes())
    ev = Evidence("sev-snp", MEDIA_TYPE, report.raw, {})
    ok = verify_evidence(ev, policy=None, now=datetime(2026, 11, 1, tzinfo=UTC),
                         trust=Trust(kds_cache_dir=tmp_path))
    assert ok.ok, ok.summary()


def test_failed_fetch_is_the_reason_the_check_gives(vectors: Path, tmp_path: Path) -> None:
    # No VCEK with the report and none in the cache: the failed check says why none was fetched
    # (offline, and what to do), not only that none was there.
    report = (vectors / "snp/turin_v5_openanolis-trustee/report.bin").read_bytes()
    got = verify_evidence(Evidence("sev-snp", MEDIA_TYPE, report, {}), policy=None,
                          now=datetime(2026, 11, 1, tzinfo=UTC), trust=Trust(kds_cache_dir=tmp_path))
    detail = {c.name: c.detail for c in got.failures}["snp.endorsement-key"]
    assert detail.startswith("no VCEK certificate was supplied, and fetching it failed: offline mode: ")
    assert "/vcek/v1/Turin/0910b4f884ff4ba9?" in detail and "is not in the KDS cache" in detail
    assert "(pass the certificate with --vcek/--chain, or allow fetching with --online)" in detail


def test_report_that_cannot_be_looked_up_says_so(vectors: Path) -> None:
    raw = bytearray((vectors / "snp/turin_v5_openanolis-trustee/report.bin").read_bytes())
    raw[0x1A0:0x1E0] = bytes(64)  # CHIP_ID hidden: no KDS URL can name this chip
    got = verify_evidence(Evidence("sev-snp", MEDIA_TYPE, bytes(raw), {}), policy=None,
                          now=datetime(2026, 11, 1, tzinfo=UTC), trust=Trust(kds_offline=False))
    detail = {c.name: c.detail for c in got.failures}["snp.endorsement-key"]
    assert "hides CHIP_ID" in detail and "supply the VCEK/VLEK with --vcek" in detail
