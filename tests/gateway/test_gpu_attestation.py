"""The gateway's own GPU attestation at start (``gpus:``): verified locally before the GPUs are
released for work, refused or unready by config, and GPU evidence in every certificate."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from gateway.config import GpuMode, GpuSection, OnGpuFailure, load_config
from gateway.gpu_attestation import GpuAttestation
from gateway.identity import IdentityManager
from ratls.cert import parse_ratls
from ratls.errors import ConfigError
from ratls.platforms.nvidia.collect import RecordedNvml
from ratls.platforms.nvidia.sim import load_or_create, sim_gpu_dir
from ratls.platforms.sim.chain import SimChain
from ratls.platforms.sim.platform import SimPlatform

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _recording(report: bytes, chain: bytes, *, cc: bool = True) -> dict:
    return {"format": "ratls-nvml-recording/1", "driver_version": "570.124.06",
            "settings": {"environment": "production", "cc_feature": cc, "devtools": False,
                         "multi_gpu_mode": "single"},
            "capabilities": {"cpu": "amd-sev-snp", "gpus_cc_capable": True}, "ready": False,
            "gpus": [{"arch": "hopper", "uuid": "GPU-0", "vbios_version": "96.00.9F.00.01",
                      "reports": [{"nonce": "00" * 32, "report": report.hex()}], "chain_pem": chain.decode()}]}


def test_simulated_gpus_pass_and_go_into_every_certificate(tmp_path: Path, sim_chain: SimChain) -> None:
    gpus = GpuAttestation(GpuSection(mode=GpuMode.SIM, count=2), tmp_path)
    gpus.attest_at_start(NOW)
    assert gpus.failure is None and gpus.ready_set and gpus.attested == 2 and gpus.readiness_reasons() == []
    assert gpus.status()["gpus"]["attested"] == 2
    manager = IdentityManager(SimPlatform(chain=sim_chain), lifetime=dt.timedelta(hours=1), rotate_at=0.5,
                              curve="p256", sans=["localhost"], common_name="g", models=None, config_digest=None,
                              devices=gpus.collector)
    rc = parse_ratls(manager.issue(NOW).cert)
    assert [d.label for d in rc.devices] == ["gpu0", "gpu1"] and set(rc.claims.devices) == {"gpu0", "gpu1"}


def test_nvml_gpus_that_fail_local_verification_are_never_released(tmp_path: Path) -> None:
    # A recorded GPU answers with a report made for another nonce (and a chain that is not
    # NVIDIA's): local verification fails. The GPUs were left released by an earlier run: they
    # are locked first and stay locked.
    gpu = load_or_create(sim_gpu_dir(tmp_path))
    recording = _recording(gpu.report(b"\x00" * 32), gpu.chain_pem())
    nvml = RecordedNvml({**recording, "ready": True})
    gpus = GpuAttestation(GpuSection(mode=GpuMode.NVML, count=1, on_failure=OnGpuFailure.UNREADY), None, nvml=nvml)
    gpus.attest_at_start(NOW)
    assert gpus.failure is not None and "gpu0.nonce" in gpus.failure and "gpu0.chain" in gpus.failure
    assert [c for c in nvml.calls if c[0] == "set_ready_state"] == [("set_ready_state", False)]
    assert not gpus.ready_set and gpus.readiness_reasons() == [gpus.failure]
    refusing = GpuAttestation(GpuSection(mode=GpuMode.NVML, count=1), None,
                              nvml=RecordedNvml(_recording(gpu.report(b"\x00" * 32), gpu.chain_pem())))
    with pytest.raises(ConfigError, match="GPU attestation failed"):
        refusing.attest_at_start(NOW)


def test_an_unexpected_error_leaves_the_gpus_locked(tmp_path: Path) -> None:
    class Broken(RecordedNvml):
        def device_count(self) -> int:
            raise ValueError("driver answered nonsense")

    gpu = load_or_create(sim_gpu_dir(tmp_path))
    nvml = Broken({**_recording(gpu.report(bytes(32)), gpu.chain_pem()), "ready": True})
    gpus = GpuAttestation(GpuSection(mode=GpuMode.NVML, on_failure=OnGpuFailure.UNREADY), None, nvml=nvml)
    gpus.attest_at_start(NOW)
    assert gpus.failure is not None and "ValueError: driver answered nonsense" in gpus.failure
    assert [c for c in nvml.calls if c[0] == "set_ready_state"] == [("set_ready_state", False)]


def test_gpus_outside_cc_mode_refuse_the_start(tmp_path: Path) -> None:
    gpu = load_or_create(sim_gpu_dir(tmp_path))
    nvml = RecordedNvml(_recording(gpu.report(b"\x00" * 32), gpu.chain_pem(), cc=False))
    gpus = GpuAttestation(GpuSection(mode=GpuMode.NVML), None, nvml=nvml)
    with pytest.raises(ConfigError, match="GPU attestation failed"):
        gpus.attest_at_start(NOW)
    assert not gpus.ready_set


def test_gpus_section_is_read_strictly_and_attested(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("version: 1\ngpus: {mode: sim, count: 2, architectures: [hopper], on_failure: unready}\n")
    cfg = load_config(path, environ={})
    assert cfg.gpus == GpuSection(mode=GpuMode.SIM, count=2, architectures=["hopper"],
                                  on_failure=OnGpuFailure.UNREADY)
    assert cfg.security_view()["gpus"]["mode"] == "sim"
    assert "gpus" not in load_config(None, environ={}).security_view()  # no GPUs: the digest is unchanged
    for bad, words in (("gpus: {mode: cuda}", "gpus.mode"), ("gpus: {count: 0}", "gpus.count"),
                       ("gpus: {architectures: [ampere]}", "gpus.architectures"), ("gpus: {moed: sim}", "moed")):
        path.write_text(f"version: 1\n{bad}\n")
        with pytest.raises(ConfigError, match=words):
            load_config(path, environ={})


def test_doctor_says_what_would_stop_gpu_attestation(tmp_path: Path) -> None:
    from gateway.doctor.gpus import gpu_findings
    gpu = load_or_create(sim_gpu_dir(tmp_path))
    path = tmp_path / "g.yaml"
    path.write_text("version: 1\ngpus: {mode: nvml, count: 2, rim_dir: /nonexistent}\n")
    cfg = load_config(path, environ={})
    report, chain = gpu.report(bytes(32)), gpu.chain_pem()
    findings = {f.name: f for f in gpu_findings(cfg, RecordedNvml(_recording(report, chain)))}
    assert findings["gpus.nvml"].status == "ok" and findings["gpus.cc"].status == "ok"
    assert findings["gpus.count"].status == "fail"
    assert "1 GPU(s) found, gpus.count is 2" in findings["gpus.count"].message
    off = {f.name: f for f in gpu_findings(cfg, RecordedNvml(_recording(report, chain, cc=False)))}
    assert off["gpus.cc"].status == "fail"
    from ratls.platforms.nvidia.collect import PynvmlApi
    no_driver = gpu_findings(cfg, PynvmlApi())  # the real NVML library: no driver on this machine
    assert no_driver[0].name == "gpus.nvml" and no_driver[0].status == "fail"
