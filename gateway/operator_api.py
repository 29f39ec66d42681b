"""The operator's endpoints. ``/metrics``, ``/healthz`` and ``/admin/status`` on the loopback
TCP port; the actions that cost hardware evidence (``/admin/rotate``, ``/admin/reload``) only
on the 0600 admin socket (any local process can reach the TCP port), and at most one per
second even there."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ratls.errors import ConfigError, RatlsError

from .metrics import MetricFamily, render

log = logging.getLogger("ratls.gateway")

ADMIN_ROTATE_MIN_INTERVAL_S = 1.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class OperatorApi:
    def __init__(self, *, families: Callable[[], list[MetricFamily]], exposition: list[Callable[[], Awaitable[str]]],
                 status: Callable[[], dict[str, Any]], healthz: Handler, rotate: Callable[[], Awaitable[int]],
                 reload: Callable[[], Awaitable[dict[str, Any]]], xds_version: Callable[[], str]) -> None:
        self.families = families  # the control plane's own series
        self.exposition = exposition  # series of others, appended as they come (Envoy's, Triton's)
        self.status, self.healthz = status, healthz
        self.rotate, self.reload, self.xds_version = rotate, reload, xds_version
        self._busy = False
        self._last_action = -ADMIN_ROTATE_MIN_INTERVAL_S

    def operator_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/admin/status", self._status)
        return app

    def admin_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/admin/rotate", self._rotate)
        app.router.add_post("/admin/reload", self._reload)
        app.router.add_get("/admin/status", self._status)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        text = render(self.families())
        for more in self.exposition:
            text += await more()
        return web.Response(text=text, content_type="text/plain")

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status())

    async def _rotate(self, request: web.Request) -> web.Response:
        return await self._action(self._rotated)

    async def _reload(self, request: web.Request) -> web.Response:
        return await self._action(self.reload)

    async def _rotated(self) -> dict[str, Any]:
        return {"serial": await self.rotate()}

    async def _action(self, action: Callable[[], Awaitable[dict[str, Any]]]) -> web.Response:
        # Even the operator cannot turn the admin socket into an evidence flood.
        since = time.monotonic() - self._last_action
        if self._busy or since < ADMIN_ROTATE_MIN_INTERVAL_S:
            wait = max(1, math.ceil(ADMIN_ROTATE_MIN_INTERVAL_S - since))
            return web.json_response({"error": "a rotation ran moments ago; retry after the Retry-After seconds"},
                                     status=429, headers={"Retry-After": str(wait)})
        self._busy = True
        self._last_action = time.monotonic()
        try:
            result = await action()
        except ConfigError as exc:  # the repository or Triton's answer: nothing was re-attested
            return web.json_response({"error": exc.message, "hint": exc.hint}, status=409)
        except RatlsError as exc:
            return web.json_response({"error": str(exc)}, status=503)
        finally:
            self._busy = False
        return web.json_response({**result, "xds_version": self.xds_version()})


async def reload_or_rotate(has_repository: bool, reload: Callable[[], Awaitable[dict[str, Any]]],
                           rotate: Callable[[], Awaitable[int]]) -> None:
    """SIGHUP (systemctl reload): re-attest the model repository when there is one, else rotate."""
    try:
        if has_repository:
            result = await reload()
            log.info("reload on SIGHUP: certificate %d, manifest %s", result["serial"], result["manifest"])
        else:
            await rotate()
    except RatlsError as exc:
        log.error("reload on SIGHUP failed (the attested state is unchanged): %s", exc)
