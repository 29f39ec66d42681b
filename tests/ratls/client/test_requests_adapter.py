"""`verified_session`: requests trusts exactly the verified certificate, follows a rotation only
to a certificate that passes the same policy, and sends nothing to one that does not."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("requests")

import requests  # noqa: E402

from ratls.cli import main  # noqa: E402
from ratls.client.requests_adapter import VerifiedAdapter, origin_prefixes, verified_session  # noqa: E402
from ratls.errors import PolicyViolation  # noqa: E402

from .https_server import HttpsServer  # noqa: E402


def _issue(tmp_path: Path, sim_dir: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    assert main(["cert", "issue", "--platform", "sim", "--sim-dir", str(sim_dir), "--out-cert", str(cert),
                 "--out-key", str(key)]) == 0
    return cert, key


@pytest.fixture
def server(tmp_path: Path, sim_state: Path) -> Iterator[HttpsServer]:
    with HttpsServer(*_issue(tmp_path, sim_state, "a")) as srv:
        yield srv


def _adapter(session: requests.Session, url: str) -> VerifiedAdapter:
    adapter = session.get_adapter(url + "/")
    assert isinstance(adapter, VerifiedAdapter)
    return adapter


def test_requests_reach_the_verified_server(server: HttpsServer, policy: Path) -> None:
    session = verified_session(server.url, policy)
    resp = session.get(server.url + "/v2/health/ready", timeout=10)
    assert resp.status_code == 200 and resp.text == "ok /v2/health/ready"
    # verify= neither adds requests' CA bundle to the pinned context nor switches checking off
    assert session.get(server.url + "/x", verify=False, timeout=10).status_code == 200
    adapter = _adapter(session, server.url)
    assert adapter.ssl_context.cert_store_stats()["x509"] == 1
    assert adapter.ssl_context.verify_mode == ssl.CERT_REQUIRED and adapter.pin.reverifications == 0


def test_rotation_is_verified_then_followed(server: HttpsServer, policy: Path, tmp_path: Path,
                                            sim_state: Path) -> None:
    session = verified_session(server.url, policy)
    assert session.get(server.url + "/before", timeout=10).status_code == 200
    first = _adapter(session, server.url).pin.server.cert_sha256
    server.present(*_issue(tmp_path, sim_state, "b"))  # same platform and policy, a new key
    resp = session.get(server.url + "/after", timeout=10)
    pin = _adapter(session, server.url).pin
    assert resp.status_code == 200 and pin.reverifications == 1 and pin.server.cert_sha256 != first
    assert server.served == ["/before", "/after"]


def test_refused_at_start_sends_nothing(server: HttpsServer, tmp_path: Path) -> None:
    strict = Path(__file__).resolve().parents[3] / "config/policies/snp-strict.yaml"
    with pytest.raises(PolicyViolation, match="does not allow simulation"):
        verified_session(server.url, strict)
    assert server.served == []


def test_rotation_to_a_failing_certificate_is_refused(server: HttpsServer, policy: Path, tmp_path: Path) -> None:
    session = verified_session(server.url, policy)
    assert session.get(server.url + "/before", timeout=10).status_code == 200
    server.present(*_issue(tmp_path, tmp_path / "another-simulator", "impostor"))  # another root
    with pytest.raises(PolicyViolation, match="sim"):
        session.get(server.url + "/after", timeout=10, verify=False)
    assert server.served == ["/before"]
    assert _adapter(session, server.url).pin.reverifications == 0


def test_mounted_for_the_origin_only(server: HttpsServer, policy: Path) -> None:
    session = verified_session(server.url, policy)
    assert not isinstance(session.get_adapter("https://example.org/"), VerifiedAdapter)
    assert not isinstance(session.get_adapter(f"https://127.0.0.1:{server.port}0/"), VerifiedAdapter)
    pin = _adapter(session, server.url).pin.server
    assert origin_prefixes(pin) == [f"https://127.0.0.1:{server.port}/"]
