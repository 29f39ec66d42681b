"""The gateway's background loops (rotation, supervision, watches), cancelled together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("ratls.gateway")


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []

    def spawn(self, *loops: Coroutine[Any, Any, Any]) -> None:
        self._tasks += [asyncio.create_task(loop) for loop in loops]

    async def cancel_all(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception) as exc:  # noqa: BLE001 - shutting down regardless
                if not isinstance(exc, asyncio.CancelledError):
                    log.warning("background task failed during shutdown: %s", exc)
