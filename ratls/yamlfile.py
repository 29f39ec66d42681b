"""Reading YAML documents (policies, gateway configs) with errors that say what and where."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from .errors import RatlsError, UsageError


def read_yaml(path: str | Path, what: str, *, error: type[RatlsError], missing_hint: str) -> Any:
    """Load *path*; unreadable file -> UsageError (with *missing_hint*), bad YAML -> *error*."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {p}: {exc.strerror}", hint=missing_hint) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{p}: not valid YAML ({exc})") from None


class KeyedReader:
    """A YAML mapping being read: tracks the key path and which keys were consumed, so an
    unknown or misspelled key is an error naming its full path (with a 'did you mean')."""

    def __init__(self, data: Any, path: str, error: type[RatlsError]) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise error(f"{path}: expected a mapping, got {type(data).__name__}")
        self.data: dict[Any, Any] = data
        self.path = path
        self.error = error
        self.used: set[str] = set()

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}"

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return self.data.get(key, default)

    def has(self, key: str) -> bool:
        return key in self.data

    def finish(self) -> None:
        for key in self.data:
            if key not in self.used:
                close = difflib.get_close_matches(str(key), sorted(self.used), n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(sorted(self.used))}"
                raise self.error(f"{self.key_path(str(key))}: unknown key", hint=hint)
