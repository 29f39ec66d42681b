"""Canonical JSON and the digest the gateway attests its configuration by (the ``config`` claim).
Shared by the gateway, which computes it, and the client tools, which check a served document."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def config_digest(config: Any) -> str:
    """``sha256:<hex>`` over the canonical JSON of the effective security configuration."""
    return "sha256:" + hashlib.sha256(canonical_json(config)).hexdigest()
