"""aiohttp runners for the gateway's own HTTP endpoints that never quote a malformed request
back: aiohttp's 400 page repeats the offending request line or header (which may carry a
token), and the operator port is reachable by any local process."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler


class QuietRequestHandler(RequestHandler):
    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status != HTTPStatus.INTERNAL_SERVER_ERROR:
            message = f"{status} {HTTPStatus(status).phrase}"
        return super().handle_error(request, status, exc, message)


class _QuietServer(web.Server):
    def __call__(self) -> RequestHandler:
        # aiohttp creates one RequestHandler per connection here and has no hook to choose the
        # class; the server's own arguments are passed on unchanged.
        return QuietRequestHandler(self, loop=self._loop, **self._kwargs)


class QuietAppRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _QuietServer  # same layout, only __call__ differs
        return server
