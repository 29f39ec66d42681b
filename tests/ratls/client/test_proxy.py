"""`ratls proxy`: a cached verdict lapses with the evidence it rests on (notAfter, claims exp,
iat + policy claims.max_age), then the upstream is verified again before anything is forwarded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ratls.cli import main
from ratls.client.fetch import Target
from ratls.client.proxy import VerifyingProxy
from ratls.platforms.sim.chain import SimChain
from ratls.policy import load_policy
from ratls.testing.tls_server import serve_certificate

T0 = datetime.now(UTC).replace(microsecond=0)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _issue(tmp_path: Path, sim_state: Path, lifetime: str) -> tuple[Path, Path]:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    assert main(["cert", "issue", "--platform", "sim", "--sim-dir", str(sim_state), "--out-cert", str(cert),
                 "--out-key", str(key), "--lifetime", lifetime, "--at", T0.isoformat()]) == 0
    return cert, key


def _policy(tmp_path: Path, chain: SimChain, claims: str = "") -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(f"version: 1\nplatforms: []\nallow_simulated: true\n"
                    f"simulated: {{root_sha256: '{chain.root_sha256}'}}\n"
                    f"sev-snp: {{measurements: ['{chain.measurement.hex()}']}}\n{claims}")
    return path


async def _request(proxy: VerifyingProxy) -> None:
    """One client connection through the proxy, read until the proxy closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
    writer.write(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()


def _run(proxy: VerifyingProxy, clock: Clock, offsets: list[int]) -> None:
    async def scenario() -> None:
        await proxy.start()
        try:
            for seconds in offsets:
                clock.now = T0 + timedelta(seconds=seconds)
                await _request(proxy)
        finally:
            await proxy.stop()

    asyncio.run(scenario())


def test_cached_verdict_lapses_at_policy_max_age(tmp_path: Path, sim_state: Path, sim_chain: SimChain) -> None:
    cert, key = _issue(tmp_path, sim_state, "24h")
    policy = load_policy(_policy(tmp_path, sim_chain, "claims: {max_age: 60s}\n"))
    clock = Clock(T0)
    with serve_certificate(cert, key) as port:
        proxy = VerifyingProxy("127.0.0.1", 0, Target("127.0.0.1", port), policy, clock=clock)
        _run(proxy, clock, [10, 30, 77])  # verified, cached, then past iat + 60 s
    assert (proxy.stats.verified, proxy.stats.cache_hits, proxy.stats.refused) == (1, 1, 1)
    assert proxy.last_refusal is not None
    assert [c.name for c in proxy.last_refusal.failures] == ["policy.claims.max-age"]


def test_cached_verdict_lapses_at_certificate_expiry(tmp_path: Path, sim_state: Path, sim_chain: SimChain) -> None:
    cert, key = _issue(tmp_path, sim_state, "2m")
    policy = load_policy(_policy(tmp_path, sim_chain))
    clock = Clock(T0)
    with serve_certificate(cert, key) as port:
        proxy = VerifyingProxy("127.0.0.1", 0, Target("127.0.0.1", port), policy, clock=clock)
        _run(proxy, clock, [10, 119, 121])
    assert (proxy.stats.verified, proxy.stats.cache_hits, proxy.stats.refused) == (1, 1, 1)
    assert proxy.last_refusal is not None
    assert {"certificate.validity", "claims.validity"} <= {c.name for c in proxy.last_refusal.failures}
