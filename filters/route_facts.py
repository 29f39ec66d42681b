"""What a route is, carried with the route as Envoy route metadata (``filter_metadata`` under
``ratls.route``) instead of encoded in its name: its kind, and the Triton API category it
serves or refuses when it is one of the catalog's. Compilation reads these facts back (which
routes need no account); Envoy carries them along unused."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

METADATA_NAMESPACE = "ratls.route"


class RouteKind(StrEnum):
    TRITON = "triton"  # forwarded to Triton
    ANSWER = "answer"  # answered by Envoy from what the gateway knows (GET /v2)
    REFUSAL = "refusal"  # refused by Envoy with an error reply
    CONTROL = "control"  # served by the control plane: evidence API, health, reflection


def tagged(route: dict[str, Any], kind: RouteKind, category: str | None = None) -> dict[str, Any]:
    """*route* with its facts attached (in place, and returned for chaining)."""
    facts: dict[str, Any] = {"kind": kind.value}
    if category is not None:
        facts["category"] = str(category)  # a Category is a StrEnum: its value
    route["metadata"] = {"filter_metadata": {METADATA_NAMESPACE: facts}}
    return route


def _facts(route: dict[str, Any]) -> dict[str, Any]:
    return route.get("metadata", {}).get("filter_metadata", {}).get(METADATA_NAMESPACE, {})


def kind_of(route: dict[str, Any]) -> RouteKind | None:
    kind = _facts(route).get("kind")
    return RouteKind(kind) if kind is not None else None


def category_of(route: dict[str, Any]) -> str | None:
    """The Triton API category the route serves or refuses, or None (not a catalog route)."""
    return _facts(route).get("category")
