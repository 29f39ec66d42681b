from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

import pytest

from gateway import envoy_config as ec
from gateway.config import load_config
from gateway.session_tickets import PREVIOUS_KEYS_KEPT, TICKET_KEY_BYTES, SessionTicketKeys
from ratls.errors import ConfigError


def counting_bytes(n: int, _counter=itertools.count()) -> bytes:  # noqa: B008 - a deterministic source
    return bytes([next(_counter) % 256]) * n


def test_rotation_puts_a_new_sealing_key_first_and_forgets_the_oldest() -> None:
    keys = SessionTicketKeys(timedelta(hours=1), counting_bytes)
    first = keys.current.keys[0]
    second = keys.rotate().keys
    assert len(second) == 1 + PREVIOUS_KEYS_KEPT and second[1] == first and second[0] != first
    third = keys.rotate().keys
    assert first not in third and third[1] == second[0]  # a ticket sealed two rotations ago no longer resumes
    assert all(len(k) == TICKET_KEY_BYTES for k in third) and keys.rotations == 2
    assert keys.ticket_lifetime == timedelta(hours=1) * (PREVIOUS_KEYS_KEPT + 1)


def test_keys_are_never_printed() -> None:
    keys = SessionTicketKeys(timedelta(hours=1), lambda n: b"\xab" * n)
    assert "ab" not in repr(keys.current).lower() and "171" not in repr(keys.current)


def test_a_short_random_source_is_refused() -> None:
    with pytest.raises(ConfigError, match="80 bytes"):
        SessionTicketKeys(timedelta(hours=1), lambda n: b"x" * (n - 1))
    with pytest.raises(ConfigError, match="positive"):
        SessionTicketKeys(timedelta(0))


def test_a_new_certificate_gets_a_whole_new_key_set() -> None:
    keys = SessionTicketKeys(timedelta(hours=1), counting_bytes)
    first = keys.for_certificate(1)
    assert keys.for_certificate(1) == first  # every push for the same certificate: the same keys
    keys.rotate()
    rotated = keys.for_certificate(1).keys
    fresh = keys.for_certificate(2).keys  # no key that sealed a ticket of certificate 1 survives
    assert len(fresh) == 1 and not set(fresh) & set(rotated) and keys.replaced_for_certificates == 1
    assert keys.status()["session_tickets"]["replaced_for_new_certificates"] == 1


def test_rotate_every_pushes_and_survives_a_failed_push() -> None:
    keys = SessionTicketKeys(timedelta(seconds=0.01))
    pushed: list[bytes] = []

    async def publish() -> str:
        pushed.append(keys.current.keys[0])
        if len(pushed) == 1:
            raise RuntimeError("Envoy is restarting")
        return "v"

    async def run() -> None:
        task = asyncio.create_task(keys.rotate_every(publish))
        while len(pushed) < 3:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(run())
    assert len(set(pushed)) == len(pushed) >= 3  # each push a newer key, the loop went on after the failure
    assert keys.failed_pushes == 1 and keys.status()["session_tickets"]["failed_pushes"] == 1


def _listener(tickets: bool) -> dict:
    return ec.to_json(ec.listener(ec.ListenerOptions(session_tickets=tickets)))


def test_the_listener_resumes_only_with_our_keys_or_not_at_all() -> None:
    tls = _listener(True)["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["session_ticket_keys_sds_secret_config"]["name"] == ec.SECRET_TICKET_KEYS
    assert tls["disable_stateful_session_resumption"] is True
    off = _listener(False)["filter_chains"][0]["transport_socket"]["typed_config"]
    assert "session_ticket_keys_sds_secret_config" not in off
    assert off["disable_stateless_session_resumption"] is True and off["disable_stateful_session_resumption"] is True


def test_the_attested_view_says_whether_and_how_often_keys_rotate() -> None:
    on = load_config(None, {"RATLS_GATEWAY__LISTEN__SESSION_TICKET_ROTATION": "30m"})
    assert on.security_view()["listen"]["session_resumption"] == {
        "ticket_key_rotation_s": 1800, "max_ticket_age_s": 3600, "per_certificate": True}
    off = load_config(None, {"RATLS_GATEWAY__LISTEN__SESSION_RESUMPTION": "false"})
    assert off.security_view()["listen"]["session_resumption"] is None


def test_tls_1_2_resumption_is_refused() -> None:
    with pytest.raises(ConfigError, match="no forward secrecy") as err:
        load_config(None, {"RATLS_GATEWAY__LISTEN__TLS_MIN_VERSION": '"1.2"'})
    assert "session_resumption: false" in err.value.hint
    both = {"RATLS_GATEWAY__LISTEN__TLS_MIN_VERSION": '"1.2"', "RATLS_GATEWAY__LISTEN__SESSION_RESUMPTION": "false"}
    assert load_config(None, both).listen.tls_min_version == "1.2"
