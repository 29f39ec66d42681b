"""Run every ``ratls doctor`` check, in the order they are reported."""

from __future__ import annotations

from ..config import GatewayConfig
from .clock import check_clock, check_vendor_roots, clock_bounds, load_vendor_roots, measure_skew
from .findings import Finding, ok
from .gpus import gpu_findings
from .host import Host
from .limits import check_rate_limits
from .ports import port_findings
from .repository import repository_findings
from .tee import tee_findings
from .triton import triton_findings


def run_checks(cfg: GatewayConfig, host: Host, *, time_url: str | None = None) -> list[Finding]:
    findings = [ok("config", f"{cfg.source} loads (identity.platform {cfg.identity.platform}, "
                   f"triton.mode {cfg.triton.mode})")]
    findings += tee_findings(cfg, host)
    findings += gpu_findings(cfg, host.nvml() if cfg.gpus.mode == "nvml" else None)
    triton, triton_user = triton_findings(cfg, host)
    findings += triton
    findings += repository_findings(cfg, host, triton_user)
    findings += port_findings(cfg, host)
    roots = load_vendor_roots(host)
    findings.append(check_clock(host.now(), *clock_bounds(roots)))
    if time_url:
        findings.append(measure_skew(time_url, host.fetch_date, host.now))
    findings += check_vendor_roots(roots)
    findings.append(check_rate_limits(cfg))
    return findings
