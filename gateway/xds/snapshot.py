"""A versioned snapshot of every resource Envoy gets, pushed whole (go-control-plane style)."""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import Message


@dataclass(frozen=True)
class Snapshot:
    version: str
    resources: dict[str, dict[str, Message]] = field(default_factory=dict)  # type_url -> name -> message

    def of_type(self, type_url: str, names: list[str] | None = None) -> list[Message]:
        by_name = self.resources.get(type_url, {})
        if not names:
            return [by_name[n] for n in sorted(by_name)]
        return [by_name[n] for n in sorted(names) if n in by_name]
