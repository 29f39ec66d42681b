"""Fair sharing of the hardware that produces fresh evidence.

Hardware reports are slow and come from one shared channel, so a single global bucket lets one
busy client starve every verifier. Instead: a token bucket per client address, at most one
request in flight per address, and one hardware request at a time, taken in arrival order. With
one waiter per address, a client waits behind at most one request of each other client."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Bucket:
    tokens: float
    updated: float


class Refused(Exception):
    """The request was not admitted; ``reason`` says which limit and ``retry_after`` when to retry."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class FairEvidenceLimiter:
    def __init__(self, rate: float, burst: int, *, max_clients: int = 4096, max_pending: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("the fresh-evidence rate must be positive and the burst at least 1")
        self.rate, self.burst = rate, burst
        self.max_clients, self.max_pending = max_clients, max_pending
        self.clock = clock
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self._in_flight: set[str] = set()
        self._hardware = asyncio.Lock()  # FIFO among waiters
        self.pending = 0  # admitted and not finished: the one running plus those waiting

    def _take(self, client: str) -> float:
        """0 when a token was taken, else the seconds until the next one."""
        now = self.clock()
        bucket = self._buckets.pop(client, None) or Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        self._buckets[client] = bucket  # most recently used last
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)  # a forgotten client starts with a full bucket: never worse off
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    @staticmethod
    def client_key(address: str) -> str:
        """One bucket per IPv4 address and per IPv6 /64 (one host usually holds a whole /64)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip)

    async def run(self, client: str, job: Callable[[], Awaitable[T]]) -> T:
        client = self.client_key(client)
        if client in self._in_flight:
            raise Refused("a fresh-evidence request from this address is already in progress", 1.0)
        if self.pending >= self.max_pending:  # before taking a token: a refusal costs the client none
            raise Refused("too many clients are waiting for fresh evidence", 1.0)
        wait = self._take(client)
        if wait:
            raise Refused("fresh evidence is rate-limited per client address", wait)
        self._in_flight.add(client)
        self.pending += 1
        try:
            async with self._hardware:
                return await job()
        finally:
            self.pending -= 1
            self._in_flight.discard(client)
