import socket

import pytest

from gateway.ports import port_in_use, ports_free
from ratls.errors import ConfigError


def test_a_listening_port_is_refused_with_its_key_and_how_to_find_the_holder() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        with pytest.raises(ConfigError, match=f"listen: port {port} on 127.0.0.1 is already in use") as exc:
            ports_free([("listen", "127.0.0.1", port)])
        assert f"sport = :{port}" in exc.value.hint


def test_free_and_any_ports_pass() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ports_free([("listen", "127.0.0.1", port), ("control.metrics", "127.0.0.1", 0)])


def test_an_address_not_of_this_machine_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot bind 192.0.2.1"):
        port_in_use("192.0.2.1", 8443)
