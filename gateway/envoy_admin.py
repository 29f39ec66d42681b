"""Envoy's admin API, reachable only on its 0600 unix socket in the run directory."""

from __future__ import annotations

from pathlib import Path

import aiohttp


class EnvoyAdmin:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    async def request(self, method: str, path: str) -> str | None:
        """The answer's body, or None when Envoy does not answer (not running, restarting)."""
        connector = aiohttp.UnixConnector(path=str(self.socket_path))
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=3)) as s:
                async with s.request(method, f"http://envoy{path}") as resp:
                    return await resp.text()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None

    async def stats(self) -> str:
        """Envoy's own series, for the gateway's /metrics."""
        text = await self.request("GET", "/stats/prometheus")
        return text if text is not None else "# envoy admin unavailable\n"
