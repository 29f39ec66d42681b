"""Refuse to start on a TCP port another process already listens on."""

from __future__ import annotations

import errno
from collections.abc import Iterable

from ratls.errors import ConfigError
from triton_backend.launch import bind_error

__all__ = ["bind_error", "port_in_use", "ports_free"]


def port_in_use(address: str, port: int) -> bool:
    """True when a live listener holds *address*:*port*; any other bind failure is a config error."""
    error = bind_error(address, port)
    if error is None:
        return False
    if error.errno == errno.EADDRINUSE:
        return True
    raise ConfigError(f"cannot bind {address}:{port}: {error.strerror}",
                      hint="check the address is one of this machine's")


def ports_free(ports: Iterable[tuple[str, str, int]]) -> None:
    """Each (config key, address, port) must be free; port 0 means "any" and is skipped."""
    for key, address, port in ports:
        if port and port_in_use(address, port):
            raise ConfigError(f"{key}: port {port} on {address} is already in use by another process, "
                              "perhaps another gateway",
                              hint=f"stop it, or choose another {key} port; ss -ltnp 'sport = :{port}' names it")
