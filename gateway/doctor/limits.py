"""``ratls doctor``'s rate-limit check: which request and evidence limits apply, and per-client caps."""

from __future__ import annotations

from typing import Any

from ..config import GatewayConfig
from .findings import Finding, ok, warn

# ---- rate limits ----

def _rate(limit: Any) -> str:
    return f"{limit.requests_per_second:g}/s burst {limit.burst}" if limit is not None else "none"


def check_rate_limits(cfg: GatewayConfig) -> Finding:
    policy = cfg.filter_policy
    c = cfg.control
    evidence = (f"fresh evidence {c.evidence_rate_per_second:g}/s burst {c.evidence_burst} per client address "
                "(control.evidence_rate_per_second/evidence_burst)")
    if policy is None:
        return ok("rate-limits", evidence)
    limits = policy.limits
    requests = f"requests: total {_rate(limits.rate_limit)}, per client {_rate(limits.per_client_rate_limit)}"
    configured = limits.rate_limit is not None or limits.per_client_rate_limit is not None
    if not policy.enabled and configured:
        return warn("rate-limits", f"{requests} are NOT applied (filters.enabled: false); {evidence}",
                    hint="enable filters, or remove filters.limits.rate_limit/per_client_rate_limit")
    if policy.enabled and limits.per_client_rate_limit is not None:
        return warn("rate-limits", f"{requests}; {evidence}: a per-client request cap is set, and one application "
                    "server behind NAT (or a load balancer) shares one address, so all its requests share the cap",
                    hint="prefer filters.limits.rate_limit (total), or size per_client_rate_limit for the busiest "
                         "address")
    return ok("rate-limits", f"{requests}; {evidence}")
