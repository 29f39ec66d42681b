"""SNP collection against a fake configfs-tsm tree (and the legacy device's error path)."""

from __future__ import annotations

import errno
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ratls.errors import CollectionError
from ratls.pipeline import verify_evidence
from ratls.platforms.sim.chain import SimChain
from ratls.platforms.snp import collect
from ratls.platforms.snp.abi import parse_report
from ratls.platforms.snp.platform import SnpPlatform
from ratls.policy import parse_policy
from ratls.testing.fake_tsm import FakeTsm, sim_snp_responder
from ratls.trust import Trust


@pytest.fixture
def fake(tmp_path: Path, sim_chain: SimChain) -> FakeTsm:
    return FakeTsm(tmp_path / "tsm" / "report", sim_snp_responder(sim_chain))


def test_configfs_collect_round_trip(fake: FakeTsm, sim_chain: SimChain) -> None:
    rd = bytes(range(64))
    got = collect.collect_configfs(rd, root=fake.root, fs=fake)
    report = parse_report(got.report)
    assert report.report_data == rd
    assert set(got.certs) == {"vcek", "ask", "ark"}
    assert got.source.startswith("configfs-tsm:")
    # The entry was removed again, so no report data lingers in configfs.
    assert fake.entries_created and not any(p.exists() for p in fake.entries_created)


def test_privlevel_is_written(fake: FakeTsm) -> None:
    got = collect.collect_configfs(bytes(64), root=fake.root, vmpl=2, fs=fake)
    assert parse_report(got.report).vmpl == 2


def test_platform_collect_then_verify_with_sim_root(fake: FakeTsm, sim_chain: SimChain) -> None:
    platform = SnpPlatform(tsm_root=fake.root, fs=fake)
    evidence = platform.collect(bytes(64))
    # As real SNP evidence the simulated chain does not reach a pinned AMD root: refused.
    appraisal = verify_evidence(evidence, policy=None, now=datetime.now(UTC))
    assert not appraisal.ok
    assert [c.name for c in appraisal.failures] == ["snp.trust-root"]
    policy = parse_policy({"version": 1, "platforms": ["sev-snp"], "sev-snp": {"measurements": [
        sim_chain.measurement.hex()]}})
    assert not verify_evidence(evidence, policy=policy, now=datetime.now(UTC), trust=Trust()).ok


def test_wrong_provider(tmp_path: Path, sim_chain: SimChain) -> None:
    fake = FakeTsm(tmp_path / "r", sim_snp_responder(sim_chain), provider="tdx_guest")
    with pytest.raises(CollectionError, match="provider is 'tdx_guest'"):
        collect.collect_configfs(bytes(64), root=fake.root, fs=fake)


def test_generation_race_detected(fake: FakeTsm) -> None:
    fake.race_on_read = True
    with pytest.raises(CollectionError, match="another writer"):
        collect.collect_configfs(bytes(64), root=fake.root, fs=fake)


def test_kernel_error_reported(fake: FakeTsm) -> None:
    fake.fail_outblob = OSError(errno.EIO, "Input/output error", "outblob")
    with pytest.raises(CollectionError, match="Input/output error"):
        collect.collect_configfs(bytes(64), root=fake.root, fs=fake)


def test_wrong_report_data_size(fake: FakeTsm) -> None:
    with pytest.raises(CollectionError, match="64 bytes"):
        collect.collect_configfs(b"short", root=fake.root, fs=fake)


def test_no_interface_at_all(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="no SEV-SNP guest interface") as info:
        collect.collect(bytes(64), tsm_root=tmp_path / "none", device=tmp_path / "sev-guest")
    assert "--platform sim" in str(info.value)


def test_legacy_device_unopenable(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="cannot open"):
        collect.collect_sev_guest(bytes(64), device=tmp_path / "missing")


def test_ioctl_number_matches_kernel_header() -> None:
    # _IOWR('S', 0x2, struct snp_guest_request_ioctl) from linux/sev-guest.h
    assert collect.SNP_GET_EXT_REPORT == 0xC0205302
