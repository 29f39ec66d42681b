"""TLS 1.3 session-ticket keys, made inside the TEE and handed to Envoy over SDS (the same
0600 unix socket as the certificate's private key), rotated on a timer.

Why our own keys rather than Envoy's built-in ones: Envoy's keys die with its process, so every
Envoy restart (a crash, a hot reload of the bootstrap) sends every client back to a full
handshake with the large RA-TLS certificate at once; ours outlive Envoy restarts and rotate on a
schedule the attested configuration states. The keys never leave this process and Envoy: never
logged, never written to disk, never in the attested configuration (only the rotation is)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

log = logging.getLogger("ratls.gateway")

# Envoy's (and BoringSSL's) ticket-key format: 16-byte key name, 32-byte HMAC secret, 32-byte AES key.
TICKET_KEY_BYTES = 80
# Keys kept besides the newest: tickets issued under them still resume until they age out.
PREVIOUS_KEYS_KEPT = 1


@dataclass(frozen=True)
class TicketKeys:
    keys: tuple[bytes, ...]  # the first encrypts new tickets; every key decrypts

    def __repr__(self) -> str:  # never print key bytes
        return f"TicketKeys({len(self.keys)} keys)"


class SessionTicketKeys:
    def __init__(self, rotation: timedelta, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        if rotation <= timedelta(0):
            raise ValueError("the ticket-key rotation interval must be positive")
        self.rotation = rotation
        self._random = random_bytes
        self.rotations = 0
        self.current = TicketKeys((self._new_key(),))

    def _new_key(self) -> bytes:
        key = self._random(TICKET_KEY_BYTES)
        if len(key) != TICKET_KEY_BYTES:
            raise ValueError(f"a session-ticket key is {TICKET_KEY_BYTES} bytes, got {len(key)}")
        return key

    @property
    def ticket_lifetime(self) -> timedelta:
        """How long a ticket can resume: until the key that sealed it is dropped."""
        return self.rotation * (PREVIOUS_KEYS_KEPT + 1)

    def rotate(self) -> TicketKeys:
        """A new sealing key in front; the oldest beyond PREVIOUS_KEYS_KEPT is forgotten."""
        self.current = TicketKeys((self._new_key(), *self.current.keys[:PREVIOUS_KEYS_KEPT]))
        self.rotations += 1
        return self.current

    async def rotate_every(self, publish: Callable[[], Awaitable[str]]) -> None:
        """Rotate and push on the configured interval, until cancelled. A failed push keeps the
        new keys: the next snapshot (any push) carries them."""
        while True:
            await asyncio.sleep(self.rotation.total_seconds())
            self.rotate()
            try:
                await publish()
            except Exception as exc:  # noqa: BLE001 - a failed push must not end the rotation loop
                log.warning("session-ticket key rotation: push failed (%s); the next push carries the keys",
                            type(exc).__name__)
