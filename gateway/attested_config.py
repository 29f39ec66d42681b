"""The security configuration a certificate attests: the filter policy with the models clients
may call, what it compiles to for Envoy's listener, and the digest that goes into the config
claim. Recompiled whenever the attested models change (a reload)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from filters.compile import FilterPlan, compile_policy
from filters.policy import FilterPolicy
from ratls.canonical import config_digest
from ratls.errors import ConfigError
from triton_backend.manifest import Manifest

from . import envoy_config as ec
from .config import GatewayConfig
from .facts import Facts


class AttestedConfig(Facts):
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.policy: FilterPolicy | None = None  # the effective policy: configured, with the served models
        self.plan: FilterPlan | None = None
        self.digest = ""
        self.access_log_path: Path | None = None  # a file the gateway keeps under its size cap
        self.server_metadata: dict[str, Any] | None = None  # Triton's GET /v2, served filtered
        self.run_dir: Path | None = None
        listen = config.listen
        self.listener_options = ec.ListenerOptions(address=listen.address, port=listen.port,
                                                   tls_min_version=listen.tls_min_version,
                                                   session_tickets=listen.session_resumption)

    def configured_policy(self) -> FilterPolicy:
        policy = self.config.filter_policy
        if policy is None:
            from filters.policy import parse_filter_policy
            policy = parse_filter_policy(self.config.filters)
        return policy

    def denied_triton_groups(self) -> tuple[str, ...]:
        """Triton API groups the policy denies: Triton refuses them itself, to everyone. Taken
        from the exposure rules even with filters off (Triton then still enforces the denies);
        health never, since the gateway's own readiness probe needs it."""
        from triton_backend.catalog import RESTRICTED_API_GROUP, Category, Exposure

        exposure = self.configured_policy().exposure
        groups = []
        for category, group in RESTRICTED_API_GROUP.items():
            if category is Category.HEALTH or exposure[category] is Exposure.ALLOW:
                continue
            if category is Category.INFERENCE and exposure[Category.GENERATE] is Exposure.ALLOW:
                continue  # generate is part of Triton's inference group
            groups.append(group)
        return tuple(groups)

    def security_config(self) -> dict[str, Any]:
        return self.config.security_view(self.policy.canonical() if self.policy else None)

    @property
    def overload_manager(self) -> dict[str, Any] | None:
        """The bootstrap's overload manager sized from the attested limits (None: Envoy's default)."""
        return (self.plan.overload_manager or None) if self.plan is not None else None

    def recompile(self, manifest: Manifest | None) -> None:
        """compile() again for other models, with what the first compile was given."""
        assert self.run_dir is not None
        self.compile(manifest, self.server_metadata, self.run_dir)

    def compile(self, manifest: Manifest | None, server_metadata: dict[str, Any] | None, run_dir: Path) -> None:
        """The policy for *manifest*'s models (unless it names its own), compiled onto the
        listener options, and the digest of the resulting security configuration."""
        self.server_metadata, self.run_dir = server_metadata, run_dir
        policy = self.configured_policy()
        if policy.models is None:
            if manifest is None:
                raise ConfigError("filters.models: list the models clients may call (the gateway has no model "
                                  "repository to take them from)", hint="or set triton.model_repository")
            policy = policy.with_models(list(manifest.model_digests()))
        self.policy = policy
        log_target = policy.access_log
        path = str(run_dir / "access.log") if log_target == "run_dir" else log_target
        served = list(manifest.model_digests()) if manifest else None
        self.plan = compile_policy(policy, access_log_path=path, served_models=served,
                                   server_metadata=server_metadata)
        self.access_log_path = Path(path) if path not in (None, "stdout") else None
        self._onto_listener(self.plan)
        self.digest = config_digest(self.security_config())

    def _onto_listener(self, plan: FilterPlan) -> None:
        opts = self.listener_options
        opts.http_filters = plan.http_filters
        opts.pre_routes = plan.pre_routes
        opts.routes = plan.routes
        opts.hcm_extras = plan.hcm_extras
        opts.network_filters = plan.network_filters
        opts.route_extras = plan.route_extras
        opts.filter_chain_extras = plan.filter_chain_extras
        opts.listener_extras = plan.listener_extras
        if plan.auth is not None:
            opts.client_ca_pem = plan.auth.mtls_ca_pem

    def status(self) -> dict[str, Any]:
        return {"config_digest": self.digest}
