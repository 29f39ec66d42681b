"""TLS 1.3 session-ticket keys, made inside the TEE and handed to Envoy over SDS (the same
0600 unix socket as the certificate's private key), rotated on a timer and replaced outright
whenever the certificate changes.

Why our own keys rather than Envoy's built-in ones: Envoy's keys die with its process, so every
Envoy restart (a crash, a supervisor restart) sends every client back to a full handshake with the
large RA-TLS certificate at once; ours outlive Envoy restarts and rotate on a schedule the attested
configuration states. The keys never leave this process and Envoy: never logged, never written to
disk, never in the attested configuration (only the rotation is)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ratls.errors import ConfigError
from ratls.timeutil import utcnow

from .facts import Facts
from .metrics import MetricFamily

log = logging.getLogger("ratls.gateway")

# Envoy's (and BoringSSL's) ticket-key format: 16-byte key name, 32-byte HMAC secret, 32-byte AES key.
TICKET_KEY_BYTES = 80
# Keys kept besides the newest: tickets issued under them still resume until they age out.
PREVIOUS_KEYS_KEPT = 1


def ticket_lifetime(rotation: timedelta) -> timedelta:
    """How long one ticket can resume: until the key that sealed it is dropped. A session is
    longer: each resumption gets a fresh ticket under the current key (BoringSSL renews it), so a
    client that resumes within every interval keeps its session until the certificate changes,
    which replaces every key (for_certificate)."""
    return rotation * (PREVIOUS_KEYS_KEPT + 1)


@dataclass(frozen=True)
class TicketKeys:
    keys: tuple[bytes, ...]  # the first encrypts new tickets; every key decrypts

    def __repr__(self) -> str:  # never print key bytes
        return f"TicketKeys({len(self.keys)} keys)"


class SessionTicketKeys(Facts):
    def __init__(self, rotation: timedelta, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        if rotation <= timedelta(0):
            raise ConfigError("listen.session_ticket_rotation must be positive", hint="e.g. 1h")
        self.rotation = rotation
        self._random = random_bytes
        self.rotations = 0
        self.replaced_for_certificates = 0
        self.failed_pushes = 0
        self.last_rotation: datetime | None = None
        self._serial: int | None = None
        self.current = TicketKeys((self._new_key(),))

    def _new_key(self) -> bytes:
        key = self._random(TICKET_KEY_BYTES)
        if len(key) != TICKET_KEY_BYTES:
            raise ConfigError(f"a session-ticket key is {TICKET_KEY_BYTES} bytes, the random source gave {len(key)}",
                              hint="a gateway bug: report it")
        return key

    @property
    def ticket_lifetime(self) -> timedelta:
        return ticket_lifetime(self.rotation)

    def for_certificate(self, serial: int) -> TicketKeys:
        """The keys to push with certificate *serial*. A new certificate carries new evidence and
        claims (models, config digest): no session authenticated under an older one may resume,
        and Envoy's session context hashes only the certificate's names, not its key or evidence,
        so the old tickets must become undecryptable. The price: one full handshake per client
        per certificate rotation, as with Envoy's own keys."""
        if serial != self._serial:
            if self._serial is not None:
                self.current = TicketKeys((self._new_key(),))
                self.replaced_for_certificates += 1
            self._serial = serial
        return self.current

    def rotate(self, now: datetime | None = None) -> TicketKeys:
        """A new sealing key in front; the oldest beyond PREVIOUS_KEYS_KEPT is forgotten."""
        self.current = TicketKeys((self._new_key(), *self.current.keys[:PREVIOUS_KEYS_KEPT]))
        self.rotations += 1
        self.last_rotation = now or utcnow()
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
                self.failed_pushes += 1
                log.warning("session-ticket key rotation: push failed (%s: %s); the next push carries the keys",
                            type(exc).__name__, exc)

    def status(self) -> dict[str, Any]:
        return {"session_tickets": {
            "rotation_s": self.rotation.total_seconds(), "max_ticket_age_s": self.ticket_lifetime.total_seconds(),
            "rotations": self.rotations, "replaced_for_new_certificates": self.replaced_for_certificates,
            "failed_pushes": self.failed_pushes,
            "last_rotation": self.last_rotation.isoformat() if self.last_rotation else None}}

    def metric_families(self) -> list[MetricFamily]:
        return [MetricFamily("ratls_session_ticket_key_rotations_total", "counter",
                             "session-ticket key rotations on the timer").add(self.rotations),
                MetricFamily("ratls_session_ticket_key_push_failures_total", "counter",
                             "rotated ticket keys whose push to Envoy failed (retried with the next push)")
                .add(self.failed_pushes)]
