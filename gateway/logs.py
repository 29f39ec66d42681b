"""Structured logs: one JSON object per line. Never request bodies, keys or evidence secrets:
callers log identifiers (serials, versions, digests), and ``Identity.__repr__`` hides the key."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and record.exc_info[1] is not None:
            # The type and the first line only: a parser error's later lines quote the raw request.
            exc = record.exc_info[1]
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            doc["error"] = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        return json.dumps(doc, ensure_ascii=False)


def setup(level: str = "info", stream: object = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("ratls")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # Libraries (aiohttp, grpc) log through the root logger: structured too, warnings and up.
    top = logging.getLogger()
    top.handlers[:] = [handler]
    top.setLevel(logging.WARNING)
