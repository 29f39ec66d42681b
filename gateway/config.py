"""Gateway configuration: one YAML file, validated with errors naming the key path, with
environment overrides for containers (``RATLS_GATEWAY__SECTION__KEY=value``)."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from ratls import registry
from ratls.errors import ConfigError, UsageError
from ratls.timeutil import parse_duration
from ratls.yamlfile import read_yaml

ENV_PREFIX = "RATLS_GATEWAY__"
CONFIG_VERSION = 1


@dataclass
class ListenConfig:
    address: str = "0.0.0.0"  # noqa: S104 - the public TLS listener is meant to be reachable
    port: int = 8443
    tls_min_version: str = "1.3"


@dataclass
class TdxCollateralConfig:
    """Where the gateway gets the Intel collateral it embeds next to its TDX quote."""

    pccs_url: str = "https://api.trustedservices.intel.com"
    cache_dir: str = "/var/cache/ratls/tdx"
    offline: bool = False  # true: only use cache_dir (place QuoteCollateralV3 JSON there)
    embed: bool = True  # false: clients must bring their own collateral


@dataclass
class IdentityConfig:
    platform: str = "auto"  # auto, or a registered platform's name (ratls.registry)
    sim_state_dir: str | None = None
    # configfs-tsm's report directory (SEV-SNP and TDX); a container mounts the host's configfs
    # wherever its image has room for it
    tsm_root: str = "/sys/kernel/config/tsm/report"
    tdx: TdxCollateralConfig = field(default_factory=TdxCollateralConfig)
    key_curve: str = "p256"
    lifetime: str = "24h"
    rotate_at: float = 0.5  # fraction of the lifetime after which a new certificate is issued
    common_name: str = "ratls-gateway"
    sans: list[str] = field(default_factory=lambda: ["localhost", "127.0.0.1"])
    retry_interval: str = "30s"  # evidence collection retry after a failure

    @property
    def lifetime_td(self) -> timedelta:
        return parse_duration(self.lifetime, what="identity.lifetime")


@dataclass
class TritonSection:
    mode: str = "managed"  # managed | external
    binary: str | None = None
    model_repository: str | None = None  # managed: default is the packaged demo repository
    http_port: int = 0  # managed: 0 = choose a free loopback port; external: required
    grpc_port: int = 0
    metrics_port: int = 0
    host: str = "127.0.0.1"  # external mode: where Triton listens
    on_exposed: str = "refuse"  # refuse | warn (external mode hardening findings)
    on_repository_change: str = "refuse"  # refuse | warn
    watch_interval: str = "10s"
    ready_timeout: str = "120s"
    restart_backoff_max: str = "30s"


@dataclass
class EnvoySection:
    binary: str | None = None
    log_level: str = "warning"
    concurrency: int = 0  # 0: Envoy's default (one worker per core)
    restart_backoff_max: str = "30s"
    drain_time: str = "5s"


@dataclass
class ControlSection:
    run_dir: str | None = None  # unix sockets, bootstrap, logs; default: a private temp dir
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 9464
    evidence_rate_per_second: float = 2.0
    evidence_burst: int = 4


@dataclass
class GatewayConfig:
    version: int = CONFIG_VERSION
    listen: ListenConfig = field(default_factory=ListenConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    triton: TritonSection = field(default_factory=TritonSection)
    envoy: EnvoySection = field(default_factory=EnvoySection)
    control: ControlSection = field(default_factory=ControlSection)
    filters: dict[str, Any] = field(default_factory=dict)  # parsed by filters.policy at load time
    source: str = "<defaults>"
    filter_policy: Any = None  # filters.policy.FilterPolicy, set by load_config

    def _upstreams_view(self) -> dict[str, Any]:
        # What the gateway does when Triton's state is not the attested one is part of what a
        # client accepts: "warn" serves through a changed repository or an exposed Triton.
        view: dict[str, Any] = {"mode": self.triton.mode, "host": self.triton.host,
                                "on_repository_change": self.triton.on_repository_change}
        if self.triton.mode == "external":
            view["on_exposed"] = self.triton.on_exposed
        return view

    def security_view(self, effective_filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """The security-relevant, effective configuration whose digest goes into the claims."""
        return {
            "listen": {"port": self.listen.port, "tls_min_version": self.listen.tls_min_version},
            "upstreams": self._upstreams_view(),
            "filters": effective_filters if effective_filters is not None else self.filters,
        }


_CHOICES = {
    "identity.key_curve": ("p256", "p384"),
    "triton.mode": ("managed", "external"),
    "triton.on_exposed": ("refuse", "warn"),
    "triton.on_repository_change": ("refuse", "warn"),
    "listen.tls_min_version": ("1.2", "1.3"),
    "envoy.log_level": ("trace", "debug", "info", "warning", "error", "critical", "off"),
}
_DURATIONS = {"identity.lifetime", "identity.retry_interval", "triton.watch_interval", "triton.ready_timeout",
              "triton.restart_backoff_max", "envoy.restart_backoff_max", "envoy.drain_time"}
_PORTS = {"listen.port", "triton.http_port", "triton.grpc_port", "triton.metrics_port", "control.metrics_port"}


def _fill(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name not in ("source", "filter_policy")}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), sorted(names), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(sorted(names))}"
            raise ConfigError(f"{key_path}: unknown key", hint=hint)
        kwargs[key] = _coerce(hints[key], value, key_path)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _fill(hint, value, path)
    origin = get_origin(hint)
    args = [a for a in get_args(hint) if a is not type(None)]
    if value is None:
        if type(None) in get_args(hint):
            return None
        raise ConfigError(f"{path}: must not be empty")
    target = args[0] if origin is not None and origin not in (list, dict) and args else hint
    if get_origin(target) is list or target is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: expected a list of strings")
        return list(value)
    if get_origin(target) is dict or target is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping")
        return value
    if target is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if target is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if target is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if target is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{path}: expected a string")
        return str(value)
    return value


def _validate(cfg: GatewayConfig) -> None:
    def get(path: str) -> Any:
        obj: Any = cfg
        for part in path.split("."):
            obj = getattr(obj, part)
        return obj

    platforms = ("auto", *(t.name for t in registry.types()))
    for path, choices in [("identity.platform", platforms), *_CHOICES.items()]:
        if get(path) not in choices:
            raise ConfigError(f"{path}: '{get(path)}' is not one of {', '.join(choices)}")
    for path in _DURATIONS:
        try:
            parse_duration(get(path), what=path)
        except UsageError as exc:
            raise ConfigError(exc.message, hint=exc.hint) from None
    for path in _PORTS:
        if not 0 <= get(path) <= 65535:
            raise ConfigError(f"{path}: {get(path)} is not a TCP port (0-65535)")
    if not cfg.control.evidence_rate_per_second > 0 or cfg.control.evidence_burst < 1:
        raise ConfigError("control.evidence_rate_per_second must be positive and control.evidence_burst at least 1",
                          hint="the defaults are 2 and 4 per client address")
    if cfg.listen.port == 0:
        raise ConfigError("listen.port: the public port must be set (e.g. 8443)")
    if not 0.1 <= cfg.identity.rotate_at <= 0.9:
        raise ConfigError("identity.rotate_at: must be between 0.1 and 0.9 of the lifetime")
    if cfg.identity.lifetime_td < timedelta(minutes=2):
        raise ConfigError("identity.lifetime: must be at least 2m")
    for name in (cfg.listen.address, cfg.control.metrics_address, cfg.triton.host):
        try:
            ipaddress.ip_address(name)
        except ValueError:
            raise ConfigError(f"'{name}' is not an IP address (addresses in the gateway config are literal IPs)") \
                from None
    if not ipaddress.ip_address(cfg.control.metrics_address).is_loopback:
        raise ConfigError("control.metrics_address: the operator port must stay on loopback")
    if cfg.triton.mode == "external" and not (cfg.triton.http_port and cfg.triton.grpc_port):
        raise ConfigError("triton.http_port and triton.grpc_port: required in external mode")
    if cfg.triton.mode == "external" and not ipaddress.ip_address(cfg.triton.host).is_loopback:
        raise ConfigError("triton.host: Triton must be reached on loopback inside the TEE",
                          hint="run Triton in the same confidential VM, bound to 127.0.0.1")
    from filters.policy import parse_filter_policy

    cfg.filter_policy = parse_filter_policy(cfg.filters)
    if cfg.version != CONFIG_VERSION:
        raise ConfigError(f"version: {cfg.version} is not supported (expected {CONFIG_VERSION})")


def _apply_env(data: dict[str, Any], environ: dict[str, str]) -> None:
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__") if p]
        if not parts:
            continue
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: {'.'.join(parts)} does not name a setting")
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None


def load_config(path: str | Path | None, environ: dict[str, str] | None = None) -> GatewayConfig:
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        try:
            loaded = read_yaml(p, "gateway config", error=ConfigError,
                               missing_hint="pass -c with the path to gateway.yaml")
        except UsageError as exc:
            raise ConfigError(exc.message, hint=exc.hint) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping")
        data = loaded or {}
        source = str(p)
    _apply_env(data, dict(os.environ if environ is None else environ))
    try:
        cfg = _fill(GatewayConfig, data, "")
        _validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}", hint=exc.hint) from None
    cfg.source = source
    return cfg
