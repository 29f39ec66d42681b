"""The request policy (``filters:`` in the gateway config): which Triton APIs and models are
exposed, path/header hygiene, size and abuse limits, and the access log. Typed, with
defaults filled in, and errors that name the key path."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from ratls.errors import ConfigError
from ratls.timeutil import parse_duration
from ratls.yamlfile import KeyedReader
from triton_backend.catalog import DEFAULT_EXPOSURE, MODEL_NAME, Category, Exposure

ALL_MODELS = "*"
_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "KI": 1024, "KIB": 1024, "M": 10**6, "MB": 10**6, "MI": 2**20,
          "MIB": 2**20, "G": 10**9, "GB": 10**9, "GI": 2**30, "GIB": 2**30}
DEFAULT_STRIP_HEADERS = ("endpoint-load-metrics-format", "x-vertex-ai-triton-redirect")
DEFAULT_STRIP_PREFIXES = ("triton-grpc-protocol-",)


def parse_size(value: Any, path: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ConfigError(f"{path}: cannot read size {value!r}", hint="use bytes or a size like 8MiB, 512KiB")
    return int(m.group(1)) * _UNITS[(m.group(2) or "").upper()]


def _seconds(value: Any, path: str) -> float:
    try:
        seconds = parse_duration(value, what=path).total_seconds()
    except Exception:  # noqa: BLE001 - re-raised with the key path
        raise ConfigError(f"{path}: cannot read duration {value!r}", hint="use e.g. 30s, 5m") from None
    if seconds <= 0:
        # Envoy reads 0 as "no timeout": a protection the attested config would show as 0.0.
        raise ConfigError(f"{path}: must be longer than 0 (Envoy would read 0 as no timeout)",
                          hint="use e.g. 30s, 5m")
    return seconds


def _Reader(data: Any, path: str) -> KeyedReader:  # noqa: N802 - reads like the class it returns
    return KeyedReader(data, path, ConfigError)


@dataclass(frozen=True)
class RateLimit:
    requests_per_second: float
    burst: int

    def to_json(self) -> dict[str, Any]:
        return {"requests_per_second": self.requests_per_second, "burst": self.burst}


@dataclass(frozen=True)
class Limits:
    """Every field is enforced by Envoy (tests/e2e walk them all): the attested config may
    never claim a limit that nothing applies."""

    max_request_bytes: int = 8 * 2**20
    max_request_bytes_by_category: dict[str, int] = field(default_factory=lambda: {"inference": 64 * 2**20})
    # A body without Content-Length (HTTP/1.1 chunked, HTTP/2 without the header) is buffered up to
    # this much: HTTP/1.1 buffers are not memory-accounted by Envoy, so endless chunked bodies
    # must be cut early. Larger bodies declare their length (every Triton SDK does).
    max_chunked_request_bytes: int = 2**20
    # Unary gRPC calls are buffered and refused above this; a ModelStreamInfer stream cannot be
    # buffered, so its messages are bounded only by flow control (the attested scope says so).
    grpc_max_message_bytes: int = 64 * 2**20
    request_timeout_s: float = 300.0  # the whole exchange of a non-streaming request, body upload included
    stream_idle_timeout_s: float = 300.0
    request_headers_timeout_s: float = 10.0
    tls_handshake_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0
    # Envoy has no per-client connection cap: the defence against one client holding every slot
    # is a limit well above what one address can open quickly, plus the handshake, header and
    # idle timeouts that recycle silent connections (README, threat model).
    max_connections: int = 16384
    max_concurrent_streams: int = 100
    max_request_headers_kb: int = 60
    max_headers_count: int = 100
    upstream_max_requests: int = 1024
    # ModelStreamInfer streams have their own upstream budget so idle streams cannot take the
    # slots every unary request needs.
    upstream_max_streams: int = 256
    # Envoy's heap; above 90% the streams holding the most buffered bytes are reset, at 95% new
    # requests get 503 and the heap is returned to the system.
    max_heap_bytes: int = 2**30
    access_log_max_bytes: int = 16 * 2**20  # rotated (one previous file kept) at this size
    compressed_requests: str = "refuse"  # Content-Encoding / grpc-encoding other than identity
    # Off by default: one application server, a NAT or a load balancer is one client address,
    # and a per-address cap silently throttles it. Overload is shed by the limits above.
    rate_limit: RateLimit | None = None
    per_client_rate_limit: RateLimit | None = None

    # What still applies with filters.enabled: false (Envoy's catch-all routes, no filters).
    CONNECTION_LEVEL = ("stream_idle_timeout_s", "request_headers_timeout_s",
                        "tls_handshake_timeout_s", "idle_timeout_s", "max_connections", "max_concurrent_streams",
                        "max_request_headers_kb", "max_headers_count", "upstream_max_requests",
                        "max_heap_bytes", "access_log_max_bytes", "compressed_requests")

    def to_json(self, request_level: bool = True) -> dict[str, Any]:
        full = self._all_json()
        return full if request_level else {k: v for k, v in full.items() if k in self.CONNECTION_LEVEL}

    def _all_json(self) -> dict[str, Any]:
        return {
            "max_request_bytes": self.max_request_bytes,
            "max_request_bytes_by_category": dict(sorted(self.max_request_bytes_by_category.items())),
            "max_chunked_request_bytes": self.max_chunked_request_bytes,
            "grpc_max_message_bytes": self.grpc_max_message_bytes,
            "grpc_max_message_bytes_scope": "unary",
            "request_timeout_s": self.request_timeout_s, "stream_idle_timeout_s": self.stream_idle_timeout_s,
            "request_headers_timeout_s": self.request_headers_timeout_s,
            "tls_handshake_timeout_s": self.tls_handshake_timeout_s, "idle_timeout_s": self.idle_timeout_s,
            "max_connections": self.max_connections, "max_concurrent_streams": self.max_concurrent_streams,
            "max_request_headers_kb": self.max_request_headers_kb, "max_headers_count": self.max_headers_count,
            "upstream_max_requests": self.upstream_max_requests, "upstream_max_streams": self.upstream_max_streams,
            "max_heap_bytes": self.max_heap_bytes, "access_log_max_bytes": self.access_log_max_bytes,
            "compressed_requests": self.compressed_requests,
            "rate_limit": self.rate_limit.to_json() if self.rate_limit else None,
            "per_client_rate_limit": self.per_client_rate_limit.to_json() if self.per_client_rate_limit else None,
        }


@dataclass(frozen=True)
class FilterPolicy:
    enabled: bool = True
    exposure: dict[Category, Exposure] = field(default_factory=lambda: dict(DEFAULT_EXPOSURE))
    models: dict[str, tuple[str, ...]] | None = None  # model -> allowed versions (() = all); None = all served
    strip_headers: tuple[str, ...] = DEFAULT_STRIP_HEADERS
    strip_header_prefixes: tuple[str, ...] = DEFAULT_STRIP_PREFIXES
    limits: Limits = field(default_factory=Limits)
    access_log: str | None = "run_dir"  # "run_dir" (access.log there), "stdout", a path, or None
    allow_dangerous: tuple[str, ...] = ()  # categories whose DENY default was overridden on purpose
    auth: Any = None  # filters.auth.AuthPolicy

    def allowed(self, category: Category) -> bool:
        return self.enabled and self.exposure[category] is Exposure.ALLOW

    def with_models(self, served: list[str]) -> FilterPolicy:
        """Fill the model allow-list from the served (attested) repository when none is given."""
        if self.models is not None:
            return self
        return FilterPolicy(self.enabled, self.exposure, {m: () for m in sorted(served)}, self.strip_headers,
                            self.strip_header_prefixes, self.limits, self.access_log, self.allow_dangerous,
                            self.auth)

    def canonical(self) -> dict[str, Any]:
        """The effective policy as attested (its SHA-256 is part of the `config` claim): only what
        Envoy enforces. With filters off every request is forwarded, so nothing else is claimed."""
        limits = self.limits.to_json(request_level=self.enabled)
        if self.access_log == "stdout":
            limits["access_log_max_bytes"] = None  # Envoy's stdout is the supervisor's to bound
        if not self.enabled:
            return {"enabled": False, "exposure": "forwarded", "models": ALL_MODELS, "strip_headers": [],
                    "strip_header_prefixes": [], "limits": limits, "access_log": self.access_log is not None,
                    "auth": None}
        return {
            "enabled": self.enabled,
            "exposure": {c.value: e.value for c, e in sorted(self.exposure.items(), key=lambda kv: kv[0].value)},
            "models": {m: list(v) for m, v in sorted((self.models or {}).items())} if self.models is not None
            else ALL_MODELS,
            # gRPC names the model inside the message: a stream's first message is the one read
            "models_scope": "http, grpc unary, grpc stream first message",
            "strip_headers": sorted(self.strip_headers),
            "strip_header_prefixes": sorted(self.strip_header_prefixes),
            "limits": limits,
            "access_log": self.access_log is not None,
            "auth": self.auth.canonical() if self.auth is not None and self.auth.enabled else None,
        }


DANGEROUS = {Category.MODEL_REPOSITORY, Category.SHARED_MEMORY, Category.TRACE, Category.LOGGING}


def _rate(value: Any, path: str) -> RateLimit | None:
    if value is None or value is False:
        return None
    r = _Reader(value, path)
    rps = r.get("requests_per_second")
    burst = r.get("burst")
    r.finish()
    if not isinstance(rps, (int, float)) or isinstance(rps, bool) or rps <= 0:
        raise ConfigError(f"{path}.requests_per_second: expected a positive number")
    if burst is None:
        burst = max(1, int(rps * 2))
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
        raise ConfigError(f"{path}.burst: expected a positive integer")
    return RateLimit(float(rps), burst)


def _choice(value: Any, path: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{path}: expected one of {', '.join(choices)}, got {value!r}",
                          hint="compressed request bodies are refused: Triton inflates them without a limit")
    return str(value)


def _exposure(r: KeyedReader, path: str) -> tuple[dict[Category, Exposure], list[str]]:
    """Which API categories are exposed, and the dangerous ones among them (acknowledged)."""
    exposure = dict(DEFAULT_EXPOSURE)
    dangerous: list[str] = []
    expose = _Reader(r.get("expose"), f"{path}.expose")
    for key in list(expose.data):
        try:
            category = Category(key)
        except ValueError:
            close = difflib.get_close_matches(str(key), [c.value for c in Category], n=1)
            raise ConfigError(f"{path}.expose.{key}: unknown API category",
                              hint=f"did you mean '{close[0]}'?" if close else
                              f"categories: {', '.join(c.value for c in Category)}") from None
        value = expose.get(key)
        if value not in ("allow", "deny"):
            raise ConfigError(f"{path}.expose.{key}: expected allow or deny, got {value!r}")
        if value == "allow" and category in DANGEROUS:
            dangerous.append(category.value)
        exposure[category] = Exposure.ALLOW if value == "allow" else Exposure.DENY
    expose.finish()
    for category, default in DEFAULT_EXPOSURE.items():
        if default is Exposure.OPT_IN and exposure[category] is Exposure.OPT_IN:
            exposure[category] = Exposure.DENY
    acknowledged = r.get("i_understand_the_risk", [])
    if dangerous and sorted(dangerous) != sorted(acknowledged or []):
        raise ConfigError(f"{path}.expose: {', '.join(sorted(dangerous))} can execute code or read memory inside "
                          "the TEE", hint=f"to expose it anyway list it in {path}.i_understand_the_risk")
    return exposure, dangerous


def _models(r: KeyedReader, path: str) -> dict[str, tuple[str, ...]] | None:
    models_raw = r.get("models")
    models: dict[str, tuple[str, ...]] | None = None
    if models_raw is not None and models_raw != ALL_MODELS:
        if isinstance(models_raw, list):
            models_raw = {m: None for m in models_raw}
        if not isinstance(models_raw, dict):
            raise ConfigError(f"{path}.models: expected a list of model names or a mapping name -> versions")
        models = {}
        for name, versions in models_raw.items():
            if not isinstance(name, str) or not re.fullmatch(MODEL_NAME, name):
                raise ConfigError(f"{path}.models.{name}: not a valid model name")
            if versions in (None, ALL_MODELS):
                models[name] = ()
            elif isinstance(versions, list) and all(isinstance(v, int) and v > 0 for v in versions):
                models[name] = tuple(str(v) for v in sorted(versions))
            else:
                raise ConfigError(f"{path}.models.{name}: expected a list of positive version numbers or '*'")
    return models


def _limits(r: KeyedReader, path: str) -> Limits:
    lim = _Reader(r.get("limits"), f"{path}.limits")
    d = Limits()
    by_cat = dict(d.max_request_bytes_by_category)
    for key, value in (lim.get("max_request_bytes_by_category") or {}).items():
        try:
            Category(key)
        except ValueError:
            raise ConfigError(f"{path}.limits.max_request_bytes_by_category.{key}: unknown API category") from None
        by_cat[key] = parse_size(value, f"{path}.limits.max_request_bytes_by_category.{key}")

    def size(key: str, default: int) -> int:
        v = lim.get(key)
        return default if v is None else parse_size(v, f"{path}.limits.{key}")

    def secs(key: str, default: float) -> float:
        v = lim.get(key)
        return default if v is None else _seconds(v, f"{path}.limits.{key}")

    def count(key: str, default: int) -> int:
        v = lim.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{path}.limits.{key}: expected a positive integer")
        return v

    limits = Limits(
        max_request_bytes=size("max_request_bytes", d.max_request_bytes),
        max_request_bytes_by_category=by_cat,
        max_chunked_request_bytes=size("max_chunked_request_bytes", d.max_chunked_request_bytes),
        grpc_max_message_bytes=size("grpc_max_message_bytes", d.grpc_max_message_bytes),
        request_timeout_s=secs("request_timeout", d.request_timeout_s),
        stream_idle_timeout_s=secs("stream_idle_timeout", d.stream_idle_timeout_s),
        request_headers_timeout_s=secs("request_headers_timeout", d.request_headers_timeout_s),
        tls_handshake_timeout_s=secs("tls_handshake_timeout", d.tls_handshake_timeout_s),
        idle_timeout_s=secs("idle_timeout", d.idle_timeout_s),
        max_connections=count("max_connections", d.max_connections),
        max_concurrent_streams=count("max_concurrent_streams", d.max_concurrent_streams),
        max_request_headers_kb=count("max_request_headers_kb", d.max_request_headers_kb),
        max_headers_count=count("max_headers_count", d.max_headers_count),
        upstream_max_requests=count("upstream_max_requests", d.upstream_max_requests),
        upstream_max_streams=count("upstream_max_streams", d.upstream_max_streams),
        max_heap_bytes=size("max_heap_bytes", d.max_heap_bytes),
        access_log_max_bytes=size("access_log_max_bytes", d.access_log_max_bytes),
        compressed_requests=_choice(lim.get("compressed_requests", d.compressed_requests),
                                    f"{path}.limits.compressed_requests", ("refuse",)),
        rate_limit=_rate(lim.get("rate_limit", d.rate_limit.to_json() if d.rate_limit else None),
                         f"{path}.limits.rate_limit"),
        per_client_rate_limit=_rate(lim.get("per_client_rate_limit", d.per_client_rate_limit.to_json()
                                            if d.per_client_rate_limit else None),
                                    f"{path}.limits.per_client_rate_limit"),
    )
    lim.finish()
    return limits


def parse_filter_policy(data: Any, path: str = "filters") -> FilterPolicy:
    r = _Reader(data, path)
    enabled = r.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{path}.enabled: expected true or false")
    exposure, dangerous = _exposure(r, path)
    models = _models(r, path)
    strip = r.get("strip_headers", [])
    if not isinstance(strip, list) or not all(isinstance(h, str) for h in strip):
        raise ConfigError(f"{path}.strip_headers: expected a list of header names")
    limits = _limits(r, path)
    from .auth import parse_auth

    auth = parse_auth(r.get("auth"), f"{path}.auth")
    access_log = r.get("access_log", "run_dir")
    if access_log is not None and not isinstance(access_log, str):
        raise ConfigError(f"{path}.access_log: expected 'run_dir', 'stdout', a file path, or null")
    r.finish()
    if not enabled and auth is not None and auth.enabled:
        raise ConfigError(f"{path}.auth: client authentication needs the request filters",
                          hint=f"remove {path}.enabled: false (with filters off every request is forwarded)")
    return FilterPolicy(enabled=enabled, exposure=exposure, models=models,
                        strip_headers=tuple(DEFAULT_STRIP_HEADERS) + tuple(h.lower() for h in strip),
                        limits=limits, access_log=access_log, allow_dangerous=tuple(sorted(dangerous)), auth=auth)
