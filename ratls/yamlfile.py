"""Reading YAML documents (policies, gateway configs) with errors that say what and where."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import RatlsError, UsageError
from .timeutil import parse_duration

E = TypeVar("E", bound=Enum)
_HEX = re.compile(r"^[0-9a-fA-F]*$")


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
        return f"{self.path}.{key}" if self.path else key

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

    # ---- typed getters: every document (policy, gateway config, filters) reads values through
    # these, so one key is validated one way and its error names the full key path.

    def _given(self, key: str, default: Any) -> Any:
        """The value, or *default* when the key is absent. A key written with no value (null,
        or an empty environment override) is refused where a default exists: read as "unset" it
        would switch a check off that the default keeps on."""
        value = self.get(key, default)
        if value is None and default is not None:
            raise self.error(f"{self.key_path(key)}: must not be empty",
                             hint=f"write a value, or remove the key for the default ({default})")
        return value

    def boolean(self, key: str, default: bool | None) -> bool | None:
        value = self._given(key, default)
        if value is not None and not isinstance(value, bool):
            raise self.error(f"{self.key_path(key)}: expected true or false, got {value!r}")
        return value

    def integer(self, key: str, default: int | None = None, *, lo: int = 0, hi: int = 2**64) -> int | None:
        value = self._given(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.error(f"{self.key_path(key)}: expected an integer in {lo}..{hi}, got {value!r}")
        return value

    def port(self, key: str, default: int) -> int:
        value = self._given(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"{self.key_path(key)}: expected an integer, got {value!r}")
        if not 0 <= value <= 65535:
            raise self.error(f"{self.key_path(key)}: {value} is not a TCP port (0-65535)")
        return value

    def number(self, key: str, default: float) -> float:
        value = self._given(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"{self.key_path(key)}: expected a number, got {value!r}")
        return float(value)

    def text(self, key: str, default: str | None, *, optional: bool = False) -> str | None:
        """A scalar read as a string; null only where *optional* says it may be unset."""
        value = self.get(key, default)
        if value is None:
            if optional:
                return None
            raise self.error(f"{self.key_path(key)}: must not be empty")
        if isinstance(value, (dict, list)):
            raise self.error(f"{self.key_path(key)}: expected a string")
        return str(value)

    def mapping(self, key: str) -> dict[Any, Any]:
        value = self.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(f"{self.key_path(key)}: expected a mapping")
        return value

    def duration(self, key: str, default: timedelta | str | int | None = None) -> timedelta | None:
        value = self._given(key, default)
        if value is None:
            return None
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(value, what=self.key_path(key))
        except UsageError as exc:
            raise self.error(exc.message, hint=exc.hint) from None

    def choice(self, key: str, allowed: Sequence[str], default: str | None = None) -> str | None:
        value = self._given(key, default)
        if value is not None and value not in allowed:
            raise self.error(f"{self.key_path(key)}: {value!r} is not one of {', '.join(allowed)}")
        return value

    def enum(self, key: str, kind: type[E], default: E) -> E:
        value = self._given(key, default)
        if isinstance(value, kind):
            return value
        for member in kind:
            if member.value == value:
                return member
        raise self.error(f"{self.key_path(key)}: {value!r} is not one of {', '.join(str(m.value) for m in kind)}")

    def hex_value(self, key: str, size: int) -> bytes | None:
        value = self.get(key)
        return None if value is None else hex_bytes(value, size, self.key_path(key), self.error)

    def hex_list(self, key: str, size: int) -> list[bytes] | None:
        value = self.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.error(f"{self.key_path(key)}: expected a list of {size}-byte hex strings")
        return [hex_bytes(item, size, f"{self.key_path(key)}[{i}]", self.error) for i, item in enumerate(value)]

    def indexed_hex(self, key: str, size: int, hi: int) -> dict[int, list[bytes]]:
        """A mapping of register index (0..hi) to one or more accepted hex values."""
        raw = self.get(key)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.error(f"{self.key_path(key)}: expected a mapping of index (0-{hi}) to hex value(s)")
        out: dict[int, list[bytes]] = {}
        for index, value in raw.items():
            where = f"{self.key_path(key)}.{index}"
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= hi:
                raise self.error(f"{where}: index must be an integer 0-{hi}")
            values = value if isinstance(value, list) else [value]
            if not values:
                raise self.error(f"{where}: empty list would accept nothing; remove the entry or list values")
            out[index] = [hex_bytes(v, size, f"{where}[{i}]", self.error) for i, v in enumerate(values)]
        return out

    def str_list(self, key: str, allowed: Sequence[str] | None = None) -> list[str] | None:
        value = self.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"{self.key_path(key)}: expected a list of strings")
        if allowed is not None:
            for v in value:
                if v not in allowed:
                    raise self.error(f"{self.key_path(key)}: '{v}' is not one of {', '.join(allowed)}")
        return value

    def sub(self, key: str) -> KeyedReader | None:
        """The nested mapping under *key*, read with the same error type; None when absent."""
        if not self.has(key):
            self.used.add(key)
            return None
        return type(self)(self.get(key), self.key_path(key), self.error)


def hex_bytes(value: Any, size: int, path: str, error: type[RatlsError]) -> bytes:
    if isinstance(value, int) and not isinstance(value, bool):
        raise error(f"{path}: write hex values as quoted strings (YAML read a number)")
    if not isinstance(value, str) or not _HEX.match(value) or len(value) != 2 * size:
        raise error(f"{path}: expected {2 * size} hex digits ({size} bytes), got {str(value)[:80]!r}")
    return bytes.fromhex(value)
