"""What each component reports about itself - why the gateway is not ready, its metric
families, its part of ``/admin/status`` - and the gateway-wide views made of them, in the
order the components are listed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .metrics import MetricFamily


class Facts:
    """A component's own facts; each says nothing unless it overrides."""

    def readiness_reasons(self) -> list[str]:
        return []

    def metric_families(self) -> list[MetricFamily]:
        return []

    def status(self) -> dict[str, Any]:
        return {}


def readiness(sources: Iterable[Facts]) -> list[str]:
    """Why the gateway does not serve attested traffic; empty when it does."""
    return [reason for source in sources for reason in source.readiness_reasons()]


def metric_families(sources: list[Facts]) -> list[MetricFamily]:
    ready = MetricFamily("ratls_ready", "gauge", "1 when the gateway serves attested traffic").add(
        0 if readiness(sources) else 1)
    return [ready, *(family for source in sources for family in source.metric_families())]


def status(sources: list[Facts]) -> dict[str, Any]:
    reasons = readiness(sources)
    doc: dict[str, Any] = {"ready": not reasons, "reasons": reasons}
    for source in sources:
        doc.update(source.status())
    return doc
