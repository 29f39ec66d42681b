"""Fetching the reference documents (RIMs) a certificate's GPUs name from the server under
verification: only over a connection pinned to that certificate, never following a redirect,
bounded in size and time, never for documents the verifier holds itself."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from ratls.cert import generate_key
from ratls.client.fetch import Target
from ratls.client.references import REFERENCES_PATH, wanted, with_references
from ratls.issue import issue_certificate
from ratls.platforms.nvidia.collector import SimGpuCollector
from ratls.platforms.nvidia.sim import load_or_create, sim_gpu_dir
from ratls.platforms.sim.chain import SimChain
from ratls.platforms.sim.platform import SimPlatform
from ratls.trust import Trust

from ..platforms.nvidia.rim_testlib import tripwire_server
from .https_server import HttpsServer, Reply


def gpu_certificate(tmp_path: Path, sim_chain: SimChain) -> tuple[bytes, tuple[Path, Path], dict[str, bytes]]:
    key = generate_key()
    gpu_dir = sim_gpu_dir(tmp_path)
    issued = issue_certificate(SimPlatform(chain=sim_chain), key, now=dt.datetime.now(dt.UTC),
                               devices=SimGpuCollector(gpu_dir, 1))
    cert, key_file = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return issued.cert.public_bytes(serialization.Encoding.DER), (cert, key_file), load_or_create(gpu_dir).rims_by_id()


def test_rims_are_fetched_by_id_from_the_pinned_server(tmp_path: Path, sim_chain: SimChain) -> None:
    der, tls, rims = gpu_certificate(tmp_path, sim_chain)

    def respond(path: str) -> Reply:
        body = rims.get(path.removeprefix(REFERENCES_PATH))
        return (200, {}, body) if body else (404, {}, b"")

    with HttpsServer(*tls, respond) as server:
        trust = with_references(Target("127.0.0.1", server.port), der, Trust())
    assert set(trust.device_references) == set(rims)
    assert sorted(p.removeprefix(REFERENCES_PATH) for p in server.served) == sorted(rims)
    # already held: nothing is asked again, and a verifier's own RIM directory is never asked for
    assert wanted(der, trust) == []
    own = tmp_path / "own"
    own.mkdir()
    for ref_id, xml in rims.items():
        (own / f"{ref_id}.xml").write_bytes(xml)
    assert wanted(der, Trust(nvidia_rim_dir=own)) == []


def test_a_redirect_is_not_followed(tmp_path: Path, sim_chain: SimChain) -> None:
    der, tls, _ = gpu_certificate(tmp_path, sim_chain)
    with tripwire_server() as (internal, seen):
        with HttpsServer(*tls, lambda _path: (302, {"Location": f"{internal}/latest/meta-data/"}, b"")) as server:
            trust = with_references(Target("127.0.0.1", server.port), der, Trust())
    assert trust.device_references == {} and seen == []


def test_another_certificate_on_the_connection_gets_nothing(tmp_path: Path, sim_chain: SimChain) -> None:
    der, _, rims = gpu_certificate(tmp_path / "a", sim_chain)
    _, other_tls, _ = gpu_certificate(tmp_path / "b", sim_chain)
    # the server presents another certificate than the one verified
    with HttpsServer(*other_tls, lambda _path: (200, {}, next(iter(rims.values())))) as server:
        assert with_references(Target("127.0.0.1", server.port), der, Trust()).device_references == {}
