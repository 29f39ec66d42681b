"""Gateway configuration: one YAML file, validated with errors naming the key path, with
environment overrides for containers (``RATLS_GATEWAY__SECTION__KEY=value``)."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from ratls import registry
from ratls.errors import ConfigError, UsageError
from ratls.yamlfile import KeyedReader, read_yaml

ENV_PREFIX = "RATLS_GATEWAY__"
CONFIG_VERSION = 1


class TritonMode(StrEnum):
    MANAGED = "managed"  # the gateway starts Triton on a measured snapshot of the repository
    EXTERNAL = "external"  # Triton runs beside the gateway, on loopback


class OnMismatch(StrEnum):
    """What the gateway does when Triton is not in the attested state."""

    REFUSE = "refuse"
    WARN = "warn"


@dataclass(frozen=True)
class ListenConfig:
    address: str = "0.0.0.0"  # noqa: S104 - the public TLS listener is meant to be reachable
    port: int = 8443
    tls_min_version: str = "1.3"
    # TLS 1.3 session resumption with ticket keys made in the TEE and rotated on this interval
    # (gateway/session_tickets.py); a ticket resumes for at most two intervals, a session ends
    # with the certificate it was verified against.
    session_resumption: bool = True
    session_ticket_rotation: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class TdxCollateralConfig:
    """Where the gateway gets the Intel collateral it embeds next to its TDX quote."""

    pccs_url: str = "https://api.trustedservices.intel.com"
    cache_dir: str = "/var/cache/ratls/tdx"
    offline: bool = False  # true: only use cache_dir (place QuoteCollateralV3 JSON there)
    embed: bool = True  # false: clients must bring their own collateral


@dataclass(frozen=True)
class IdentityConfig:
    platform: str = "auto"  # auto, or a registered platform's name (ratls.registry)
    sim_state_dir: str | None = None
    # configfs-tsm's report directory (SEV-SNP and TDX); a container mounts the host's configfs
    # wherever its image has room for it
    tsm_root: str = "/sys/kernel/config/tsm/report"
    tdx: TdxCollateralConfig = field(default_factory=TdxCollateralConfig)
    key_curve: str = "p256"
    lifetime: timedelta = timedelta(hours=24)
    rotate_at: float = 0.5  # fraction of the lifetime after which a new certificate is issued
    common_name: str = "ratls-gateway"
    sans: list[str] = field(default_factory=lambda: ["localhost", "127.0.0.1"])
    retry_interval: timedelta = timedelta(seconds=30)  # evidence collection retry after a failure

    @property
    def lifetime_td(self) -> timedelta:
        return self.lifetime


class GpuMode(StrEnum):
    NONE = "none"  # no GPU evidence (CPU-only inference, or GPUs this gateway does not attest)
    NVML = "nvml"  # NVIDIA confidential GPUs through NVML inside the CVM
    SIM = "sim"  # simulated GPUs (development; SIMULATED in every certificate)


class OnGpuFailure(StrEnum):
    REFUSE = "refuse"  # the gateway does not start
    UNREADY = "unready"  # it starts, reports not ready, and never sets the GPUs' CC ready state


@dataclass(frozen=True)
class GpuSection:
    mode: GpuMode = GpuMode.NONE
    count: int | None = None  # expected number of GPUs (None: any; sim: 1)
    architectures: list[str] = field(default_factory=list)  # e.g. [hopper]; empty: any
    allow_devtools: bool = False
    rim_dir: str | None = None  # NVIDIA RIMs (by RIM id) verified at start and served to clients
    rim_online: bool = False  # fetch missing RIMs from NVIDIA's RIM service (cached in rim_cache_dir)
    rim_cache_dir: str = "/var/cache/ratls/nvidia-rims"
    on_failure: OnGpuFailure = OnGpuFailure.REFUSE


@dataclass(frozen=True)
class TritonSection:
    mode: TritonMode = TritonMode.MANAGED
    binary: str | None = None
    model_repository: str | None = None  # managed: default is the packaged demo repository
    http_port: int = 0  # managed: 0 = choose a free loopback port; external: required
    grpc_port: int = 0
    metrics_port: int = 0
    host: str = "127.0.0.1"  # external mode: where Triton listens
    on_exposed: OnMismatch = OnMismatch.REFUSE  # external mode hardening findings
    on_repository_change: OnMismatch = OnMismatch.REFUSE
    watch_interval: timedelta = timedelta(seconds=10)
    ready_timeout: timedelta = timedelta(seconds=120)
    restart_backoff_max: timedelta = timedelta(seconds=30)


@dataclass(frozen=True)
class EnvoySection:
    binary: str | None = None
    log_level: str = "warning"
    concurrency: int = 0  # 0: Envoy's default (one worker per core)
    restart_backoff_max: timedelta = timedelta(seconds=30)
    drain_time: timedelta = timedelta(seconds=5)


@dataclass(frozen=True)
class ControlSection:
    run_dir: str | None = None  # unix sockets, bootstrap, logs; default: a private temp dir
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 9464
    evidence_rate_per_second: float = 2.0
    evidence_burst: int = 4


@dataclass(frozen=True)
class GatewayConfig:
    version: int = CONFIG_VERSION
    listen: ListenConfig = field(default_factory=ListenConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    triton: TritonSection = field(default_factory=TritonSection)
    envoy: EnvoySection = field(default_factory=EnvoySection)
    control: ControlSection = field(default_factory=ControlSection)
    gpus: GpuSection = field(default_factory=GpuSection)
    filters: dict[str, Any] = field(default_factory=dict)  # as written; parsed into filter_policy
    source: str = "<defaults>"
    filter_policy: Any = None  # filters.policy.FilterPolicy, parsed by load_config

    def _upstreams_view(self) -> dict[str, Any]:
        # What the gateway does when Triton's state is not the attested one is part of what a
        # client accepts: "warn" serves through a changed repository or an exposed Triton.
        view: dict[str, Any] = {"mode": self.triton.mode, "host": self.triton.host,
                                "on_repository_change": self.triton.on_repository_change}
        if self.triton.mode == "external":
            view["on_exposed"] = self.triton.on_exposed
        return view

    def _resumption_view(self) -> dict[str, int] | None:
        from .session_tickets import ticket_lifetime

        if not self.listen.session_resumption:
            return None
        rotation = self.listen.session_ticket_rotation
        return {"ticket_key_rotation_s": int(rotation.total_seconds()),
                "max_ticket_age_s": int(ticket_lifetime(rotation).total_seconds()), "per_certificate": True}

    def security_view(self, effective_filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """The security-relevant, effective configuration whose digest goes into the claims."""
        view: dict[str, Any] = {
            "listen": {"port": self.listen.port, "tls_min_version": self.listen.tls_min_version,
                       # a resumed connection shows no certificate: clients should know it can happen
                       "session_resumption": self._resumption_view()},
            "upstreams": self._upstreams_view(),
            "filters": effective_filters if effective_filters is not None else self.filters,
        }
        if self.gpus.mode is not GpuMode.NONE:
            # which GPUs the gateway attests, and whether it serves when they fail, is what a client accepts
            g = self.gpus
            view["gpus"] = {"mode": g.mode, "count": g.count, "architectures": g.architectures,
                            "allow_devtools": g.allow_devtools, "on_failure": g.on_failure}
        return view


def _section(r: KeyedReader, key: str) -> KeyedReader:
    sub = r.sub(key)
    return sub if sub is not None else KeyedReader({}, r.key_path(key), ConfigError)


def _ip(r: KeyedReader, key: str, default: str) -> str:
    value = str(r.text(key, default))
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"'{value}' is not an IP address (addresses in the gateway config are literal IPs)") \
            from None
    return value


def _dur(r: KeyedReader, key: str, default: timedelta) -> timedelta:
    value = r.duration(key, default)  # null is refused, absent is the default
    return default if value is None else value


def _listen(r: KeyedReader) -> ListenConfig:
    d = ListenConfig()
    out = ListenConfig(address=_ip(r, "address", d.address), port=r.port("port", d.port),
                       tls_min_version=str(r.choice("tls_min_version", ("1.2", "1.3"), d.tls_min_version)),
                       session_resumption=bool(r.boolean("session_resumption", d.session_resumption)),
                       session_ticket_rotation=_dur(r, "session_ticket_rotation", d.session_ticket_rotation))
    r.finish()
    if out.port == 0:
        raise ConfigError("listen.port: the public port must be set (e.g. 8443)")
    if out.session_resumption and out.tls_min_version != "1.3":
        # A TLS 1.2 ticket carries the master secret and resumes without a fresh key exchange:
        # whoever later learns a ticket key could decrypt the resumed sessions it sealed.
        raise ConfigError("listen.session_resumption needs listen.tls_min_version: \"1.3\" (TLS 1.2 resumption "
                          "has no forward secrecy)", hint="keep tls_min_version: \"1.3\", or set "
                                                         "listen.session_resumption: false to serve TLS 1.2 clients")
    if not timedelta(seconds=10) <= out.session_ticket_rotation <= timedelta(days=1):
        raise ConfigError(f"listen.session_ticket_rotation: {out.session_ticket_rotation} is outside 10s..24h",
                          hint="rotate ticket keys at least daily (e.g. 1h), or set listen.session_resumption: false")
    return out


def _collateral(r: KeyedReader) -> TdxCollateralConfig:
    d = TdxCollateralConfig()
    out = TdxCollateralConfig(pccs_url=str(r.text("pccs_url", d.pccs_url)), cache_dir=str(r.text("cache_dir",
                              d.cache_dir)), offline=bool(r.boolean("offline", d.offline)),
                              embed=bool(r.boolean("embed", d.embed)))
    r.finish()
    return out


def _identity(r: KeyedReader) -> IdentityConfig:
    d = IdentityConfig()
    platforms = ("auto", *(t.name for t in registry.types()))
    out = IdentityConfig(
        platform=str(r.choice("platform", platforms, d.platform)),
        sim_state_dir=r.text("sim_state_dir", None, optional=True),
        tsm_root=str(r.text("tsm_root", d.tsm_root)),
        tdx=_collateral(_section(r, "tdx")),
        key_curve=str(r.choice("key_curve", ("p256", "p384"), d.key_curve)),
        lifetime=_dur(r, "lifetime", d.lifetime),
        rotate_at=r.number("rotate_at", d.rotate_at),
        common_name=str(r.text("common_name", d.common_name)),
        sans=d.sans if (sans := r.str_list("sans")) is None else sans,
        retry_interval=_dur(r, "retry_interval", d.retry_interval))
    r.finish()
    if not 0.1 <= out.rotate_at <= 0.9:
        raise ConfigError("identity.rotate_at: must be between 0.1 and 0.9 of the lifetime")
    if out.lifetime < timedelta(minutes=2):
        raise ConfigError("identity.lifetime: must be at least 2m")
    return out


def _triton(r: KeyedReader) -> TritonSection:
    d = TritonSection()
    out = TritonSection(
        mode=r.enum("mode", TritonMode, d.mode),
        binary=r.text("binary", None, optional=True),
        model_repository=r.text("model_repository", None, optional=True),
        http_port=r.port("http_port", d.http_port), grpc_port=r.port("grpc_port", d.grpc_port),
        metrics_port=r.port("metrics_port", d.metrics_port),
        host=_ip(r, "host", d.host),
        on_exposed=r.enum("on_exposed", OnMismatch, d.on_exposed),
        on_repository_change=r.enum("on_repository_change", OnMismatch, d.on_repository_change),
        watch_interval=_dur(r, "watch_interval", d.watch_interval),
        ready_timeout=_dur(r, "ready_timeout", d.ready_timeout),
        restart_backoff_max=_dur(r, "restart_backoff_max", d.restart_backoff_max))
    r.finish()
    if out.mode == "external" and not (out.http_port and out.grpc_port):
        raise ConfigError("triton.http_port and triton.grpc_port: required in external mode")
    if out.mode == "external" and not ipaddress.ip_address(out.host).is_loopback:
        raise ConfigError("triton.host: Triton must be reached on loopback inside the TEE",
                          hint="run Triton in the same confidential VM, bound to 127.0.0.1")
    return out


def _envoy(r: KeyedReader) -> EnvoySection:
    d = EnvoySection()
    out = EnvoySection(
        binary=r.text("binary", None, optional=True),
        log_level=str(r.choice("log_level", ("trace", "debug", "info", "warning", "error", "critical", "off"),
                               d.log_level)),
        concurrency=int(r.integer("concurrency", d.concurrency, lo=0, hi=1024) or 0),
        restart_backoff_max=_dur(r, "restart_backoff_max", d.restart_backoff_max),
        drain_time=_dur(r, "drain_time", d.drain_time))
    r.finish()
    return out


def _gpus(r: KeyedReader) -> GpuSection:
    d = GpuSection()
    archs = r.str_list("architectures", ("hopper", "blackwell"))
    out = GpuSection(
        mode=r.enum("mode", GpuMode, d.mode),
        count=r.integer("count", None, lo=1, hi=16),  # a certificate carries at most 16 devices
        architectures=d.architectures if archs is None else archs,
        allow_devtools=bool(r.boolean("allow_devtools", d.allow_devtools)),
        rim_dir=r.text("rim_dir", None, optional=True),
        rim_online=bool(r.boolean("rim_online", d.rim_online)),
        rim_cache_dir=str(r.text("rim_cache_dir", d.rim_cache_dir)),
        on_failure=r.enum("on_failure", OnGpuFailure, d.on_failure))
    r.finish()
    return out


def _control(r: KeyedReader) -> ControlSection:
    d = ControlSection()
    out = ControlSection(
        run_dir=r.text("run_dir", None, optional=True),
        metrics_address=_ip(r, "metrics_address", d.metrics_address),
        metrics_port=r.port("metrics_port", d.metrics_port),
        evidence_rate_per_second=r.number("evidence_rate_per_second", d.evidence_rate_per_second),
        evidence_burst=int(r.integer("evidence_burst", d.evidence_burst, lo=0, hi=2**31) or 0))
    r.finish()
    if not out.evidence_rate_per_second > 0 or out.evidence_burst < 1:
        raise ConfigError("control.evidence_rate_per_second must be positive and control.evidence_burst at least 1",
                          hint="the defaults are 2 and 4 per client address")
    if not ipaddress.ip_address(out.metrics_address).is_loopback:
        raise ConfigError("control.metrics_address: the operator port must stay on loopback")
    return out


def parse_config(data: dict[str, Any], source: str = "<defaults>") -> GatewayConfig:
    """The whole configuration from its (already environment-merged) document; nothing mutated."""
    from filters.policy import parse_filter_policy

    r = KeyedReader(data, "", ConfigError)
    version = r.integer("version", CONFIG_VERSION, lo=0, hi=2**31)
    cfg = GatewayConfig(version=int(version or 0), listen=_listen(_section(r, "listen")),
                        identity=_identity(_section(r, "identity")), triton=_triton(_section(r, "triton")),
                        envoy=_envoy(_section(r, "envoy")), control=_control(_section(r, "control")),
                        gpus=_gpus(_section(r, "gpus")), filters=r.mapping("filters"), source=source)
    r.finish()
    cfg = dataclasses.replace(cfg, filter_policy=parse_filter_policy(cfg.filters))
    if cfg.version != CONFIG_VERSION:
        raise ConfigError(f"version: {cfg.version} is not supported (expected {CONFIG_VERSION})")
    return cfg


def with_filters(cfg: GatewayConfig, filters: dict[str, Any]) -> GatewayConfig:
    """The same configuration with another ``filters:`` section (tests, benchmarks)."""
    from filters.policy import parse_filter_policy

    return dataclasses.replace(cfg, filters=filters, filter_policy=parse_filter_policy(filters))


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
        return parse_config(data, source)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}", hint=exc.hint) from None
