"""Running the gateway in the foreground: SIGTERM and SIGINT stop it (during start-up too),
SIGHUP is the operator's reload."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

log = logging.getLogger("ratls.gateway")


async def run_until_stopped(start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]],
                            on_hangup: Callable[[], Awaitable[None]]) -> None:
    loop = asyncio.get_running_loop()
    requested = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, requested.set)
    loop.add_signal_handler(signal.SIGINT, requested.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(on_hangup()))
    try:
        # a stop request is honoured while starting too (waiting for Triton can take minutes)
        starting = asyncio.ensure_future(start())
        stopping = asyncio.ensure_future(requested.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                starting.cancel()
                log.info("stop requested during start-up")
                await asyncio.gather(starting, return_exceptions=True)
            else:
                starting.result()  # a start-up refusal propagates
                await requested.wait()
        finally:
            stopping.cancel()
    finally:
        await stop()
