"""The access log Envoy writes to a file, kept under its attested size."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from .envoy_admin import EnvoyAdmin
from .facts import Facts
from .metrics import MetricFamily

log = logging.getLogger("ratls.gateway")

ACCESS_LOG_CHECK_S = 1.0


class AccessLogRotation(Facts):
    """Envoy's file log never rotates; on a tmpfs run dir it is RAM. Past the attested size
    it is moved to <name>.1 (replacing the previous one) and Envoy reopens its log; a reopen
    that did not happen is retried until Envoy writes to a new file again."""

    def __init__(self) -> None:
        self.rotations = 0

    async def run(self, path: Path, limit: int, admin: EnvoyAdmin) -> None:
        reopen_pending = False
        while True:
            await asyncio.sleep(ACCESS_LOG_CHECK_S)
            try:
                if not reopen_pending:
                    if path.stat().st_size <= limit:
                        continue
                    os.replace(path, path.with_name(path.name + ".1"))
                    self.rotations += 1
                reopen_pending = await admin.request("POST", "/reopen_logs") is None or not path.exists()
            except FileNotFoundError:
                reopen_pending = True  # moved, and Envoy has not reopened yet
            except OSError as exc:
                log.error("access log rotation failed: %s", exc.strerror or exc)

    def metric_families(self) -> list[MetricFamily]:
        return [MetricFamily("ratls_access_log_rotations_total", "counter", "access log rotations at its size cap").add(
            self.rotations)]
