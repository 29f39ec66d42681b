"""`ratls verify --fresh` under the evidence API's rate limit: 429/503 are retried as Retry-After
asks, within a bounded budget; still limited is exit 2 with a readable message (no verdict); a
genuine fresh-evidence failure stays a verdict (exit 1)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ratls import cbor, registry
from ratls.cert import build_collection
from ratls.cli import main
from ratls.client.fresh import EVIDENCE_PATH, EvidenceApiBusy, error_detail, retry_after_seconds, verify_fresh
from ratls.client.verify import verify_server
from ratls.issue import collect_for_claims, make_claims
from ratls.policy import load_policy
from ratls.timeutil import utcnow

from .https_server import HttpsServer, Reply

LIMITED = {"error": "per-client limit reached; retry after the Retry-After seconds"}


class EvidenceApi:
    """Answers the evidence API: first the scripted replies, then (if ``then_serve``) fresh
    evidence for the nonce asked, signed by the simulated platform for the server's key."""

    def __init__(self, key_pem: Path, sim_state: Path, script: list[Reply], *, then_serve: bool = True) -> None:
        self.key = load_pem_private_key(key_pem.read_bytes(), None)
        self.platform = registry.get("sim", state_dir=sim_state)
        self.script, self.then_serve = list(script), then_serve
        self.calls = 0
        self.nonce_override: bytes | None = None

    def __call__(self, path: str) -> Reply:
        self.calls += 1
        if self.script:
            return self.script.pop(0)
        if not self.then_serve:
            return 500, {}, b""
        nonce = self.nonce_override or bytes.fromhex(parse_qs(urlsplit(path).query)["nonce"][0])
        claims = make_claims(self.key, platform="sim", now=utcnow(), lifetime=timedelta(minutes=5),  # type: ignore[arg-type]
                             instance=b"\x01" * 16, nonce=nonce)
        claims_cbor, evidence, _ = collect_for_claims(self.platform, claims)
        return 200, {"Content-Type": "application/cmw+cbor"}, build_collection(claims_cbor, evidence).encode()


def limited(retry_after: str | None, *, as_cbor: bool = True, status: int = 429) -> Reply:
    headers = {"Content-Type": "application/cbor" if as_cbor else "application/json"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return status, headers, cbor.encode(LIMITED) if as_cbor else json.dumps(LIMITED).encode()


@pytest.fixture
def gateway(tmp_path: Path, sim_state: Path) -> Callable[..., AbstractContextManager[tuple[HttpsServer, EvidenceApi]]]:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    assert main(["cert", "issue", "--platform", "sim", "--sim-dir", str(sim_state), "--out-cert", str(cert),
                 "--out-key", str(key)]) == 0

    @contextmanager
    def start(script: list[Reply], **kwargs: bool) -> Iterator[tuple[HttpsServer, EvidenceApi]]:
        api = EvidenceApi(key, sim_state, script, **kwargs)
        with HttpsServer(cert, key, api) as server:
            yield server, api

    return start


def _verify(capfd: pytest.CaptureFixture[str], url: str, policy: Path) -> tuple[int, str, str]:
    capfd.readouterr()
    code = main(["verify", url, "--policy", str(policy), "--fresh"])
    out, err = capfd.readouterr()
    return code, out, err


def test_429_then_evidence_passes(gateway, policy: Path, capfd) -> None:
    with gateway([limited("0"), limited("0", as_cbor=False)]) as (server, api):
        code, out, err = _verify(capfd, server.url, policy)
        assert code == 0, err
        assert "verdict: PASS" in out and api.calls == 3
        assert len(server.served) == 3 and all(p.startswith(EVIDENCE_PATH + "?nonce=") for p in server.served)


def test_retry_after_is_honoured_within_the_budget(gateway, policy: Path) -> None:
    with gateway([limited("2"), limited("3")]) as (server, api):
        verified = verify_server(server.url, policy)
        slept: list[float] = []
        appraisal = verify_fresh(verified, load_policy(policy), now=utcnow(), sleep=slept.append)
        assert appraisal.ok and slept == [2.0, 3.0] and api.calls == 3


def test_always_limited_exits_2_with_a_readable_message(gateway, policy: Path, capfd) -> None:
    with gateway([limited("30")] * 5, then_serve=False) as (server, api):
        code, out, err = _verify(capfd, server.url, policy)
        assert code == 2 and out == ""
        assert "the evidence API is rate-limiting this client (429); retry after 30 s" in err
        assert "per-client limit reached" in err and "\\x" not in err and "b'" not in err
        assert api.calls == 1  # 30 s is over the wait budget: reported at once, not slept through


def test_limited_after_every_attempt_raises_busy(gateway, policy: Path) -> None:
    with gateway([limited("1", as_cbor=False)] * 5, then_serve=False) as (server, api):
        verified = verify_server(server.url, policy)
        slept: list[float] = []
        with pytest.raises(EvidenceApiBusy, match=r"rate-limiting this client \(429\); retry after 1 s") as info:
            verify_fresh(verified, load_policy(policy), now=utcnow(), sleep=slept.append, attempts=3)
        assert slept == [1.0, 1.0] and api.calls == 3 and info.value.status == 429


def test_unavailable_after_every_attempt_is_a_failed_freshness_check(gateway, policy: Path) -> None:
    # Retried like a rate limit, but a server that never produces fresh evidence has not proven
    # freshness: a verdict, not "try again later" (else the key holder could dodge exit 1).
    with gateway([limited("1", status=503, as_cbor=False)] * 5, then_serve=False) as (server, api):
        verified = verify_server(server.url, policy)
        slept: list[float] = []
        appraisal = verify_fresh(verified, load_policy(policy), now=utcnow(), sleep=slept.append, attempts=3)
        assert not appraisal.ok and slept == [1.0, 1.0] and api.calls == 3
        assert any("stayed unavailable (503) after 3 attempts" in c.detail for c in appraisal.failures)


def test_total_wait_is_capped(gateway, policy: Path) -> None:
    with gateway([limited("6")] * 5, then_serve=False) as (server, api):
        verified = verify_server(server.url, policy)
        slept: list[float] = []
        with pytest.raises(EvidenceApiBusy, match="retry after 6 s"):
            verify_fresh(verified, load_policy(policy), now=utcnow(), sleep=slept.append, max_wait=10)
        assert slept == [6.0] and api.calls == 2  # a second 6 s wait would pass the 10 s cap


def test_wrong_nonce_is_still_a_verdict(gateway, policy: Path, capfd) -> None:
    with gateway([limited("0")]) as (server, api):
        api.nonce_override = b"\x07" * 32
        code, out, _ = _verify(capfd, server.url, policy)
        assert code == 1 and "[FAIL] freshness.nonce" in out


def test_other_errors_are_a_failed_fetch(gateway, policy: Path, capfd) -> None:
    not_found = (404, {"Content-Type": "application/cbor"}, cbor.encode({"error": "no such route"}))
    with gateway([not_found], then_serve=False) as (server, _):
        code, out, _ = _verify(capfd, server.url, policy)
        assert code == 1 and "[FAIL] fresh.fetch: the evidence API answered 404: no such route" in out


@pytest.mark.parametrize(("body", "content_type", "detail"), [
    (cbor.encode({"error": "slow down"}), "application/cbor", "slow down"),
    (json.dumps({"error": "slow down"}).encode(), "application/json", "slow down"),
    (cbor.encode({"error": "slow down"}), "", "slow down"),  # undeclared: JSON, then CBOR
    (b"too many\nrequests", "text/plain", "too many requests"),
    (b"\xa1\x00\xff\xfe", "application/octet-stream", "4 bytes of application/octet-stream"),
])
def test_error_detail(body: bytes, content_type: str, detail: str) -> None:
    from email.message import Message
    headers = Message()
    if content_type:
        headers["Content-Type"] = content_type
    assert error_detail(body, headers) == detail


def test_retry_after_seconds() -> None:
    from datetime import UTC, datetime
    now = datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 01 Jan 2025 00:00:05 GMT", now) == 5.0
    assert retry_after_seconds("Tue, 31 Dec 2024 23:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
