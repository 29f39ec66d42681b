"""The control plane's own servers (evidence API, reflection, ext_authz, operator port, admin
socket), stopped together. A unix socket is created 0600 (the umask closes the window before
any chmod): only the gateway's user (Envoy runs as it) and root connect."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
from aiohttp import web

from .http_server import QuietAppRunner


class LocalServers:
    def __init__(self) -> None:
        self._runners: list[web.AppRunner] = []
        self._grpc: list[grpc.aio.Server] = []

    async def serve_unix(self, app: web.Application, path: Path) -> None:
        runner = await self._runner(app)
        old = os.umask(0o177)
        try:
            await web.UnixSite(runner, str(path)).start()
        finally:
            os.umask(old)

    async def serve_tcp(self, app: web.Application, host: str, port: int) -> None:
        await web.TCPSite(await self._runner(app), host, port).start()

    async def serve_grpc(self, server: grpc.aio.Server, path: Path) -> None:
        old = os.umask(0o177)
        try:
            server.add_insecure_port(f"unix:{path}")
            await server.start()
        finally:
            os.umask(old)
        self.adopt_grpc(server)

    def adopt_grpc(self, server: grpc.aio.Server) -> None:
        """A gRPC server started elsewhere, stopped with the others."""
        self._grpc.append(server)

    async def _runner(self, app: web.Application) -> web.AppRunner:
        runner = QuietAppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        return runner

    async def stop(self) -> None:
        for server in self._grpc:
            await server.stop(0.5)
        for runner in self._runners:
            await runner.cleanup()
