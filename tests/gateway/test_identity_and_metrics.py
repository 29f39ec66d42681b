from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.identity import IdentityManager
from gateway.metrics import MetricFamily, render
from ratls.claims import decode_claims
from ratls.cmw import decode_collection
from ratls.errors import CollectionError, ConfigError
from ratls.pipeline import verify_certificate
from ratls.platforms.sim.chain import SimChain
from ratls.platforms.sim.platform import SimPlatform
from ratls.policy import parse_policy


def manager(chain: SimChain, platform=None) -> IdentityManager:
    return IdentityManager(platform or SimPlatform(chain=chain), lifetime=dt.timedelta(hours=2), rotate_at=0.5,
                           curve="p256", sans=["localhost"], common_name="gw",
                           models={"manifest": "sha256:" + "a" * 64, "models": {}}, config_digest="sha256:" + "b" * 64)


def test_issue_rotate_and_verify(sim_chain: SimChain) -> None:
    m = manager(sim_chain)
    first = m.issue()
    second = m.issue()
    assert (first.serial, second.serial, m.rotations) == (1, 2, 1)
    assert first.cert.public_key() != second.cert.public_key()
    policy = parse_policy({"version": 1, "allow_simulated": True, "simulated": {"root_sha256": sim_chain.root_sha256},
                           "sev-snp": {"measurements": [sim_chain.measurement.hex()]},
                           "claims": {"config": "sha256:" + "b" * 64}})
    appraisal, _ = verify_certificate(second.cert, policy=policy, now=dt.datetime.now(dt.UTC))
    assert appraisal.ok, appraisal.summary()
    due = m.rotation_due(dt.datetime.now(dt.UTC))
    issued = dt.datetime.fromtimestamp(second.issued.claims.iat, dt.UTC)
    assert due == issued + dt.timedelta(hours=1)  # half of the 2 h lifetime, from issuance (not notBefore)
    assert "PRIVATE" not in repr(second) and "key" not in repr(second).lower().replace("not_after", "")


def test_fresh_evidence_binds_nonce_and_key(sim_chain: SimChain) -> None:
    m = manager(sim_chain)
    ident = m.issue()
    collection = decode_collection(m.fresh_evidence(b"n" * 16))
    claims = decode_claims(collection.record("claims").value)
    assert claims.nonce == b"n" * 16
    assert claims.pubkey_sha256 == ident.issued.claims.pubkey_sha256


class FailingPlatform(SimPlatform):
    def collect(self, report_data: bytes):  # type: ignore[no-untyped-def]
        raise CollectionError("device went away")


def test_failure_keeps_current_identity(sim_chain: SimChain) -> None:
    m = manager(sim_chain)
    ident = m.issue()
    m.platform = FailingPlatform(chain=sim_chain)
    with pytest.raises(CollectionError):
        m.issue()
    assert m.current is ident and m.evidence_failures == 1 and "device went away" in (m.last_error or "")


def test_prometheus_rendering() -> None:
    text = render([MetricFamily("x_total", "counter", "things").add(3, type='a"b'),
                   MetricFamily("y", "gauge", "exp").add(1795760000.0)])
    assert '# TYPE x_total counter\nx_total{type="a\\"b"} 3\n' in text
    assert "y 1795760000\n" in text


def test_rotation_comes_before_embedded_tdx_collateral_goes_stale(sim_chain: SimChain, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A certificate must not outlive the collateral it carries: clients would reject it with an
    expired CRL. Collateral expiring in about 3 h moves rotation from 12 h to nextUpdate - 1 h."""
    from ratls.platforms.sim.tdx_chain import COLLATERAL_YEARS, generate_tdx_chain
    from ratls.platforms.sim.tdx_platform import SimTdxPlatform
    from ratls.platforms.tdx.collateral import COLLATERAL_REFRESH_MARGIN, next_update

    real_now = dt.datetime.now(dt.UTC)
    expiring = generate_tdx_chain(real_now - dt.timedelta(days=365 * COLLATERAL_YEARS) + dt.timedelta(hours=3))
    stale_at = next_update(expiring.collateral)
    assert stale_at is not None and stale_at - real_now < dt.timedelta(hours=4)
    m = IdentityManager(SimTdxPlatform(state_dir=tmp_path, chain=expiring), lifetime=dt.timedelta(hours=24),
                        rotate_at=0.5, curve="p256", sans=["localhost"], common_name="gw", models=None,
                        config_digest="sha256:" + "b" * 64)
    m.issue()
    assert m.rotation_due(real_now) == stale_at - COLLATERAL_REFRESH_MARGIN


@pytest.mark.parametrize(("filters", "restricted", "open_"), [
    ({}, {"model-repository", "shared-memory", "statistics", "trace", "logging", "model-config"},
     {"health", "metadata", "inference"}),
    # filters off: Triton still refuses what the exposure rules deny
    ({"enabled": False}, {"model-repository", "shared-memory", "statistics"}, {"health", "inference"}),
    # the gateway's own readiness probe needs health even when clients may not use it
    ({"expose": {"health": "deny"}}, {"model-repository"}, {"health"}),
    ({"expose": {"generate": "allow", "inference": "deny"}}, {"statistics"}, {"inference"}),
])
def test_triton_restricts_the_denied_groups(filters: dict, restricted: set, open_: set) -> None:
    from gateway.app import Gateway
    from gateway.config import load_config, with_filters

    # the filters given are the ones parsed (assigning config.filters once left the parsed default in place)
    config = with_filters(load_config(None, {"RATLS_GATEWAY__IDENTITY__PLATFORM": "sim"}), filters)
    groups = set(Gateway(config)._denied_triton_groups())
    assert restricted <= groups and not open_ & groups


def _gateway(env: dict[str, str]) -> Gateway:
    from gateway.config import load_config
    from triton_backend.launch import free_port

    # Ports of their own: the start-up checks must not depend on what else runs on this machine.
    ports = {"RATLS_GATEWAY__LISTEN__PORT": str(free_port()), "RATLS_GATEWAY__CONTROL__METRICS_PORT": str(free_port())}
    return Gateway(load_config(None, {**ports, **env}))


def test_tsm_root_reaches_detection_and_the_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A container mounts the host's configfs outside its read-only /sys: detection and
    collection both use the configured directory, not the default path."""
    from ratls import registry
    from ratls.host_probe import HostProbe

    seen: dict[str, Path] = {}

    def detect(host: HostProbe) -> str:
        seen["detect"] = host.tsm_root
        return "tdx"

    monkeypatch.setattr(registry, "detect", detect)
    root = tmp_path / "configfs" / "tsm" / "report"
    gw = _gateway({"RATLS_GATEWAY__IDENTITY__TSM_ROOT": str(root),
                   "RATLS_GATEWAY__IDENTITY__TDX__EMBED": "false"})
    platform = gw.platform
    assert seen["detect"] == root and platform.tsm_root == root


def test_no_tee_is_a_clear_config_error(tmp_path: Path) -> None:
    gw = _gateway({"RATLS_GATEWAY__IDENTITY__TSM_ROOT": str(tmp_path / "absent")})
    with pytest.raises(ConfigError, match="no TEE detected") as err:
        _ = gw.platform
    assert "identity.platform: sim" in (err.value.hint or "")


def test_run_dir_the_gateway_cannot_own_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root without CAP_FOWNER cannot chmod a tmpfs mounted for another uid: say so, no traceback."""
    import asyncio
    import os

    run_dir = tmp_path / "run"
    run_dir.mkdir()

    def refuse(path: object, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    gw = _gateway({"RATLS_GATEWAY__IDENTITY__PLATFORM": "sim", "RATLS_GATEWAY__CONTROL__RUN_DIR": str(run_dir)})
    with pytest.raises(ConfigError, match=r"cannot use control.run_dir .*Operation not permitted.*belongs to uid"):
        asyncio.run(gw.start())


def test_empty_model_repository_is_refused(tmp_path: Path) -> None:
    """An empty (or not yet mounted) repository would be attested as 'serves nothing'."""
    import asyncio

    empty = tmp_path / "models"
    empty.mkdir()
    gw = _gateway({"RATLS_GATEWAY__IDENTITY__PLATFORM": "sim", "RATLS_GATEWAY__TRITON__MODEL_REPOSITORY": str(empty),
                   "RATLS_GATEWAY__CONTROL__RUN_DIR": str(tmp_path / "run"),
                   "RATLS_GATEWAY__IDENTITY__SIM_STATE_DIR": str(tmp_path / "sim")})
    with pytest.raises(ConfigError, match="holds no models"):
        asyncio.run(gw.start())
