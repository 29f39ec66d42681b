from __future__ import annotations

import asyncio

import pytest

from gateway.evidence_limiter import FairEvidenceLimiter, Refused


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def _ok() -> str:
    return "evidence"


def test_each_client_has_its_own_bucket() -> None:
    clock = Clock()
    limiter = FairEvidenceLimiter(rate=1.0, burst=2, clock=clock)

    async def go() -> None:
        assert await limiter.run("10.0.0.1", _ok) == "evidence"
        assert await limiter.run("10.0.0.1", _ok) == "evidence"
        with pytest.raises(Refused) as refused:
            await limiter.run("10.0.0.1", _ok)
        assert "per client" in refused.value.reason and 0 < refused.value.retry_after <= 1
        # another address is not affected by the first one's exhaustion
        assert await limiter.run("10.0.0.2", _ok) == "evidence"
        clock.t += 1.0
        assert await limiter.run("10.0.0.1", _ok) == "evidence"
    asyncio.run(go())


def test_one_request_in_flight_per_client_and_fifo_across_clients() -> None:
    limiter = FairEvidenceLimiter(rate=100.0, burst=100)
    order: list[str] = []

    async def go() -> None:
        gate = asyncio.Event()

        def job(name: str):  # type: ignore[no-untyped-def]
            async def run() -> str:
                order.append(name)
                if name == "a1":
                    await gate.wait()
                return name
            return run

        first = asyncio.create_task(limiter.run("a", job("a1")))
        await asyncio.sleep(0)
        # the busy client cannot queue a second request behind its first
        with pytest.raises(Refused, match="already in progress"):
            await limiter.run("a", job("a2"))
        second = asyncio.create_task(limiter.run("b", job("b1")))
        await asyncio.sleep(0)
        assert order == ["a1"]  # one hardware request at a time
        gate.set()
        assert await first == "a1" and await second == "b1"
        assert order == ["a1", "b1"]
    asyncio.run(go())


def test_waiting_room_is_bounded() -> None:
    limiter = FairEvidenceLimiter(rate=100.0, burst=100, max_pending=1)

    async def go() -> None:
        gate = asyncio.Event()

        async def slow() -> str:
            await gate.wait()
            return "x"
        running = asyncio.create_task(limiter.run("a", slow))
        await asyncio.sleep(0)
        with pytest.raises(Refused, match="too many clients"):
            await limiter.run("b", _ok)
        gate.set()
        await running
        assert limiter.pending == 0
    asyncio.run(go())


def test_client_table_is_bounded() -> None:
    limiter = FairEvidenceLimiter(rate=1.0, burst=1, max_clients=3)

    async def go() -> None:
        for i in range(10):
            await limiter.run(f"c{i}", _ok)
    asyncio.run(go())
    assert len(limiter._buckets) == 3


def test_an_ipv6_host_is_one_client_per_64() -> None:
    key = FairEvidenceLimiter.client_key
    assert key("2001:db8:1:2::1") == key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert key("2001:db8:1:3::1") != key("2001:db8:1:2::1")
    assert key("::ffff:10.0.0.1") == key("10.0.0.1") == "10.0.0.1"


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FairEvidenceLimiter(rate=0, burst=1)
