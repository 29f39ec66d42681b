"""Refuse to start on a TCP port another process already listens on."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable

from ratls.errors import ConfigError


def port_in_use(address: str, port: int) -> bool:
    """True when binding *address*:*port* fails because something holds it. Bound the way Envoy
    binds (SO_REUSEADDR, no SO_REUSEPORT), so only a live listener, not TIME_WAIT, counts."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise ConfigError(f"cannot bind {address}:{port}: {exc.strerror}",
                              hint="check the address is one of this machine's") from None
    return False


def ports_free(ports: Iterable[tuple[str, str, int]]) -> None:
    """Each (config key, address, port) must be free; port 0 means "any" and is skipped."""
    for key, address, port in ports:
        if port and port_in_use(address, port):
            raise ConfigError(f"{key}: port {port} on {address} is already in use by another process "
                              "(another gateway?)",
                              hint=f"stop it (ss -ltnp 'sport = :{port}' names it) or choose another {key} port")
