"""RimStore: directory, cache and (opt-in) service lookups, with an injected fetcher - no network.
One test runs the real HTTP fetcher against a loopback server."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ratls.errors import EvidenceError
from ratls.evidence import FetchFailed
from ratls.platforms.nvidia.rim_store import DEFAULT_SERVICE_URL, MAX_RESPONSE, RimStore, http_fetch

from .rim_testlib import sim_signer

ID = "NV_GPU_DRIVER_GH100_550.90.07"


@pytest.fixture(scope="module")
def rim_xml() -> bytes:
    return sim_signer().sign({})


class FakeService:
    """Answers like NVIDIA's RIM service; records every URL asked for."""

    def __init__(self, body: bytes | None = None, error: Exception | None = None) -> None:
        self.body, self.error, self.urls = body, error, []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        if self.error is not None:
            raise self.error
        assert self.body is not None
        return self.body


def answer(xml: bytes) -> bytes:
    return json.dumps({"id": ID, "rim": base64.b64encode(xml).decode(), "rim_format": "SWID"}).encode()


def test_offline_by_default_and_nothing_fetched(tmp_path: Path) -> None:
    fake = FakeService(error=AssertionError("must not fetch"))
    store = RimStore(tmp_path, tmp_path / "cache", fetch=fake)
    assert store.offline and store.service_url == DEFAULT_SERVICE_URL == "https://rim.attestation.nvidia.com/v1/rim/"
    assert store.get(ID) is None and fake.urls == []
    assert RimStore(None, None, fetch=fake).get(ID) is None


@pytest.mark.parametrize("filename", [f"{ID}.xml", f"{ID}.swidtag", f"{ID.lower()}.XML", f"{ID.lower()}.swidtag"])
def test_directory_lookup_is_case_insensitive(tmp_path: Path, rim_xml: bytes, filename: str) -> None:
    (tmp_path / filename).write_bytes(rim_xml)
    (tmp_path / "unrelated.xml").write_bytes(b"x")
    assert RimStore(tmp_path).get(ID) == rim_xml
    assert RimStore(tmp_path).get(ID.lower()) == rim_xml


def test_two_files_for_one_id_is_ambiguous(tmp_path: Path, rim_xml: bytes) -> None:
    (tmp_path / f"{ID}.xml").write_bytes(rim_xml)
    (tmp_path / f"{ID}.swidtag").write_bytes(rim_xml)
    result = RimStore(tmp_path).get(ID)
    assert isinstance(result, FetchFailed) and "more than once" in result.message


def test_missing_directory_and_oversized_file(tmp_path: Path) -> None:
    result = RimStore(tmp_path / "absent").get(ID)
    assert isinstance(result, FetchFailed) and "cannot read the RIM directory" in result.message
    (tmp_path / f"{ID}.xml").write_bytes(b"x" * (1024 * 1024 + 1))
    result = RimStore(tmp_path).get(ID)
    assert isinstance(result, FetchFailed) and "larger than" in result.message


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/b", "..", "", ".hidden", "x" * 200, "id?x=1", "id#f", "a b",
                                 "NV_GPU..x", "\u0665"])
def test_ids_that_could_be_paths_or_urls_are_refused(tmp_path: Path, bad: str) -> None:
    fake = FakeService(error=AssertionError("must not fetch"))
    result = RimStore(tmp_path, offline=False, fetch=fake).get(bad)
    assert isinstance(result, FetchFailed) and "is not a RIM ID" in result.message and fake.urls == []


def test_fetch_then_cache(tmp_path: Path, rim_xml: bytes) -> None:
    cache = tmp_path / "cache"
    fake = FakeService(answer(rim_xml))
    online = RimStore(None, cache, offline=False, fetch=fake)
    assert online.get(ID) == rim_xml
    assert fake.urls == [f"https://rim.attestation.nvidia.com/v1/rim/{ID}"]
    assert (cache / f"{ID.upper()}.xml").read_bytes() == rim_xml
    assert online.get(ID.lower()) == rim_xml and len(fake.urls) == 1  # served from the cache
    assert RimStore(None, cache).get(ID) == rim_xml  # offline reads the cache too


def test_directory_wins_over_cache_and_service(tmp_path: Path, rim_xml: bytes) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / f"{ID}.xml").write_bytes(rim_xml)
    fake = FakeService(error=AssertionError("must not fetch"))
    assert RimStore(tmp_path / "dir", tmp_path / "cache", offline=False, fetch=fake).get(ID) == rim_xml


def test_service_url_is_configurable(rim_xml: bytes) -> None:
    fake = FakeService(answer(rim_xml))
    RimStore(offline=False, service_url="https://rim.example/v2/rim", fetch=fake).get(ID)
    assert fake.urls == [f"https://rim.example/v2/rim/{ID}"]


@pytest.mark.parametrize(("body", "message"), [
    (b"not json", "is not JSON"),
    (b"[]", 'no "rim" string'),
    (b'{"rim": 5}', 'no "rim" string'),
    (b'{"rim": ""}', 'no "rim" string'),
    (b'{"rim": "!!!"}', "is not base64"),
    (json.dumps({"rim": base64.b64encode(b"<a/>").decode()}).encode(), "root element is a"),
    (json.dumps({"rim": base64.b64encode(b"<!DOCTYPE a><a/>").decode()}).encode(), "DOCTYPE"),
    (b"[" * 100_000 + b"]" * 100_000, "is not JSON"),  # RecursionError, caught
    (b" " * (MAX_RESPONSE + 1), "larger than"),
    (json.dumps({"rim": base64.b64encode(b" " * (1024 * 1024 + 1)).decode()}).encode(), "larger than"),
])
def test_bad_service_answers_are_reasons_and_not_cached(tmp_path: Path, body: bytes, message: str) -> None:
    cache = tmp_path / "cache"
    result = RimStore(None, cache, offline=False, fetch=FakeService(body)).get(ID)
    assert isinstance(result, FetchFailed) and message in result.message, result
    assert ID in result.message and not cache.exists()


@pytest.mark.parametrize("error", [EvidenceError("NVIDIA RIM service answered 404"), OSError("connection reset")])
def test_fetch_failure_is_a_typed_reason(error: Exception) -> None:
    result = RimStore(offline=False, fetch=FakeService(error=error)).get(ID)
    assert isinstance(result, FetchFailed) and str(error) in result.explain()
    assert result.hint is not None


def test_unwritable_cache_still_returns_the_rim(tmp_path: Path, rim_xml: bytes) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    assert RimStore(None, blocker, offline=False, fetch=FakeService(answer(rim_xml))).get(ID) == rim_xml


@pytest.fixture
def loopback(rim_xml: bytes) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            ok = self.path == f"/v1/rim/{ID}"
            self.send_response(200 if ok else 404)
            self.end_headers()
            if ok:
                self.wfile.write(answer(rim_xml))

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/rim/"
    server.shutdown()
    server.server_close()


def test_real_fetcher_on_loopback(loopback: str, rim_xml: bytes, tmp_path: Path) -> None:
    store = RimStore(None, tmp_path, offline=False, service_url=loopback)
    assert store.get(ID) == rim_xml
    missing = store.get("NV_GPU_DRIVER_GH100_1.0")
    assert isinstance(missing, FetchFailed) and "answered 404" in missing.message
    with pytest.raises(EvidenceError, match="cannot reach"):
        http_fetch("http://127.0.0.1:9/", timeout=2)
