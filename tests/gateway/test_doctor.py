"""``ratls doctor``: every check against a fake device tree, fake sockets and a fixed clock."""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import ssl
import urllib.error
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import doctor
from gateway.config import GatewayConfig, load_config
from gateway.doctor import (
    Finding,
    Host,
    Identity,
    Status,
    VendorRoots,
    check_skew,
    exit_code,
    measure_skew,
    render_text,
    run_checks,
    socket_owner,
    writable_by,
)
from ratls.errors import EvidenceError
from ratls.platforms.snp.abi import Product
from ratls.platforms.snp.certs import shipped_roots
from ratls.testing.fake_tsm import FakeTsm
from triton_backend.hardening import HardeningReport
from triton_backend.locate import TritonInstall, TritonNotFound

NOW = datetime(2027, 3, 1, tzinfo=UTC)
NOBODY = Identity(4242, frozenset({4242}))  # owns nothing in tmp_path (the tests may run as root)
TSM = "sys/kernel/config/tsm/report"


def _no_triton_api(url: str, ports: list[int]) -> HardeningReport:
    raise AssertionError("managed mode must not probe an external Triton")


def make_repo(base: Path) -> Path:
    repo = base / "models"
    (repo / "add_sub" / "1").mkdir(parents=True, exist_ok=True)
    (repo / "add_sub" / "config.pbtxt").write_text('backend: "python"\n')
    (repo / "add_sub" / "1" / "model.py").write_text("class TritonPythonModel: ...\n")
    return repo


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> GatewayConfig:
    data: dict[str, Any] = {"version": 1, "identity": {"platform": "sev-snp"},
                            "triton": {"model_repository": str(make_repo(tmp_path))},
                            "listen": {"address": "127.0.0.1", "port": 8443}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, {})


def make_host(tmp_path: Path, *, provider: str | None = "sev_guest", **overrides: Any) -> Host:
    root = tmp_path / "fake-root"
    (root / "dev").mkdir(parents=True, exist_ok=True)
    fs = FakeTsm(root / TSM, lambda data, level: (b"", None), provider=provider) if provider else None
    fields: dict[str, Any] = {
        "root": root, "user": NOBODY, "bind": lambda address, port: None, "now": lambda: NOW,
        "locate_triton": lambda binary: TritonInstall(tmp_path / "tritonserver", "PATH"),
        "hardening_check": _no_triton_api, "which": lambda tool: f"/usr/bin/{tool}",
    }
    if fs is not None:
        fields["tsm_fs"] = fs
    fields.update(overrides)
    return Host(**fields)


def by_name(findings: list[Finding]) -> dict[str, Finding]:
    return {f.name: f for f in findings}


# ---- the whole run ----

def test_clean_setup_passes_every_check(tmp_path: Path) -> None:
    findings = run_checks(make_config(tmp_path), make_host(tmp_path))
    assert [f for f in findings if f.status is not Status.OK] == []
    names = set(by_name(findings))
    assert {"tee.platform", "tee.configfs-tsm", "triton.binary", "repository", "repository.bytecode",
            "port.listen", "port.operator", "clock", "roots.amd-milan", "roots.intel", "rate-limits"} <= names
    assert exit_code(findings) == 0


def test_text_output_lines_and_hints() -> None:
    text = render_text([Finding("a", Status.OK, "fine"), Finding("b", Status.FAIL, "broken", "fix it"),
                        Finding("c", Status.WARN, "odd", "look")])
    assert text.splitlines() == ["ok    a: fine", "FAIL  b: broken", "      hint: fix it", "WARN  c: odd",
                                 "      hint: look", "1 failed, 1 warning, 1 ok"]


def test_warnings_alone_exit_0_and_a_failure_exits_2() -> None:
    assert exit_code([Finding("a", Status.WARN, "w")]) == 0
    assert exit_code([Finding("a", Status.WARN, "w"), Finding("b", Status.FAIL, "f")]) == 2


# ---- TEE ----

def test_simulated_platform_warns_loudly_and_skips_devices(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, identity={"platform": "sim"})
    findings = by_name(run_checks(cfg, make_host(tmp_path, provider=None)))
    platform = findings["tee.platform"]
    assert platform.status is Status.WARN and "SIMULATED" in platform.message and "NO hardware" in platform.message
    assert "identity.platform: auto" in (platform.hint or "")
    assert not any(name.startswith("tee.") and name != "tee.platform" for name in findings)


def test_simulated_platform_names_the_hardware_it_ignores(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, identity={"platform": "sim"})
    finding = by_name(run_checks(cfg, make_host(tmp_path)))["tee.platform"]
    assert finding.status is Status.WARN and "this VM is a sev-snp guest" in finding.message


def test_configured_platform_differs_from_the_detected_one(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, identity={"platform": "tdx"})
    findings = by_name(run_checks(cfg, make_host(tmp_path)))
    assert findings["tee.platform"].status is Status.FAIL
    assert "but this VM is a sev-snp guest" in findings["tee.platform"].message
    assert findings["tee.configfs-tsm"].status is Status.FAIL  # provider sev_guest, not tdx_guest


def test_no_tee_fails_with_the_detection_hint(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, identity={"platform": "auto"})
    finding = by_name(run_checks(cfg, make_host(tmp_path, provider=None)))["tee.platform"]
    assert finding.status is Status.FAIL and "no TEE detected" in finding.message
    assert "identity.platform: sim" in (finding.hint or "")


def test_tdx_guest_without_configfs(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, identity={"platform": "tdx"})
    host = make_host(tmp_path, provider=None)
    (host.root / "dev" / "tdx_guest").touch()
    findings = by_name(run_checks(cfg, host))
    assert "configfs-tsm is not available" in findings["tee.platform"].message
    tsm = findings["tee.configfs-tsm"]
    assert tsm.status is Status.FAIL and "mount -t configfs" in (tsm.hint or "")


def test_sev_guest_device_without_permission_names_the_group(tmp_path: Path) -> None:
    def denied(path: Path) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    host = make_host(tmp_path, provider=None, open_device=denied, group_name=lambda gid: "sev")
    device = host.root / "dev" / "sev-guest"
    device.touch()
    device.chmod(0o660)
    findings = by_name(run_checks(make_config(tmp_path), host))
    assert findings["tee.platform"].status is Status.OK
    assert findings["tee.configfs-tsm"].status is Status.WARN  # the legacy device is the fallback
    sev = findings["tee.sev-guest"]
    assert sev.status is Status.FAIL and "cannot open it" in sev.message
    assert sev.hint == "run as root or add the user to group sev (usermod -aG sev 4242, then log in again)"


def test_sev_guest_device_that_opens(tmp_path: Path) -> None:
    host = make_host(tmp_path, provider=None, open_device=lambda path: None)
    (host.root / "dev" / "sev-guest").touch()
    findings = by_name(run_checks(make_config(tmp_path), host))
    assert findings["tee.sev-guest"].status is Status.OK


def test_configfs_present_but_not_writable(tmp_path: Path) -> None:
    class ReadOnlyTsm(FakeTsm):
        def mkdir(self, path: Path) -> None:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

    host = make_host(tmp_path, provider=None)
    host.tsm_fs = ReadOnlyTsm(host.root / TSM, lambda data, level: (b"", None))
    (host.root / "dev" / "sev-guest").touch()  # detection falls back to it; collection would not
    tsm = by_name(run_checks(make_config(tmp_path), host))["tee.configfs-tsm"]
    assert tsm.status is Status.FAIL and "not writable by uid 4242" in tsm.message
    assert "CAP_SYS_ADMIN" in (tsm.hint or "")


def test_configured_tsm_root_is_looked_up_in_the_tree(tmp_path: Path) -> None:
    host = make_host(tmp_path, provider=None)
    host.tsm_fs = FakeTsm(host.root / "configfs" / "tsm" / "report", lambda d, lv: (b"", None))
    cfg = make_config(tmp_path, identity={"platform": "sev-snp", "tsm_root": "/configfs/tsm/report"})
    assert by_name(run_checks(cfg, host))["tee.configfs-tsm"].status is Status.OK


def test_azure_needs_the_vtpm_and_tpm2_tools(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, identity={"platform": "azure-snp-vtpm"})
    host = make_host(tmp_path, provider=None, which=lambda tool: None)
    findings = by_name(run_checks(cfg, host))
    assert findings["tee.vtpm"].status is Status.FAIL and "tpmrm0 does not exist" in findings["tee.vtpm"].message
    tools = findings["tee.tpm2-tools"]
    assert tools.status is Status.FAIL and "tpm2_nvread" in tools.message and "tpm2-tools" in (tools.hint or "")


# ---- Triton ----

def test_managed_triton_binary_not_found(tmp_path: Path) -> None:
    def missing(binary: str | None) -> TritonInstall:
        raise TritonNotFound("no tritonserver found")

    finding = by_name(run_checks(make_config(tmp_path), make_host(tmp_path, locate_triton=missing)))["triton.binary"]
    assert finding.status is Status.FAIL and "triton.binary" in (finding.hint or "")


def _external(tmp_path: Path, on_exposed: str = "refuse") -> GatewayConfig:
    return make_config(tmp_path, triton={"mode": "external", "http_port": 8000, "grpc_port": 8001,
                                         "on_exposed": on_exposed})


def test_external_triton_hardened(tmp_path: Path) -> None:
    report = HardeningReport(version="2.50.0", model_control="disabled",
                             listen_addresses={8000: ["127.0.0.1"], 8001: ["127.0.0.1"]})
    calls: list[tuple[str, list[int]]] = []

    def check(url: str, ports: list[int]) -> HardeningReport:
        calls.append((url, ports))
        return report

    host = make_host(tmp_path, hardening_check=check, connect=lambda host, port: True)
    findings = by_name(run_checks(_external(tmp_path), host))
    assert calls == [("http://127.0.0.1:8000", [8000, 8001])]
    assert all(findings[n].status is Status.OK for n in ("triton.http", "triton.grpc", "triton.model-control",
                                                         "triton.listeners"))
    assert "2.50.0" in findings["triton.http"].message
    assert not any(name.startswith("port.triton") for name in findings)  # external ports are Triton's own


@pytest.mark.parametrize(("on_exposed", "status"), [("refuse", Status.FAIL), ("warn", Status.WARN)])
def test_external_triton_exposed_and_loading(tmp_path: Path, on_exposed: str, status: Status) -> None:
    report = HardeningReport(version="2.50.0", model_control="explicit", exposed=["0.0.0.0:8000"],
                             listen_addresses={8000: ["0.0.0.0"], 8001: ["127.0.0.1"]}, problems=["x"])
    host = make_host(tmp_path, hardening_check=lambda url, ports: report, connect=lambda host, port: True)
    findings = by_name(run_checks(_external(tmp_path, on_exposed), host))
    listeners, control = findings["triton.listeners"], findings["triton.model-control"]
    assert listeners.status is status and "0.0.0.0:8000" in listeners.message
    assert "--http-address 127.0.0.1" in (listeners.hint or "")
    assert control.status is status and "--model-control-mode=none" in (control.hint or "")


def test_external_triton_not_answering(tmp_path: Path) -> None:
    report = HardeningReport(answered=False, problems=["Triton does not answer"])
    host = make_host(tmp_path, hardening_check=lambda url, ports: report, connect=lambda host, port: False)
    findings = by_name(run_checks(_external(tmp_path), host))
    assert findings["triton.http"].status is Status.FAIL and findings["triton.grpc"].status is Status.FAIL
    assert "triton.model-control" not in findings


def _fake_process(proc: Path, pid: int, inode: int, uid: int, groups: str) -> None:
    (proc / str(pid) / "fd").mkdir(parents=True)
    (proc / str(pid) / "fd" / "5").symlink_to(f"socket:[{inode}]")
    (proc / str(pid) / "status").write_text(f"Name:\ttritonserver\nUid:\t1000\t{uid}\t{uid}\t{uid}\n"
                                            f"Gid:\t1000\t{uid}\t{uid}\t{uid}\nGroups:\t{groups}\n")


def test_socket_owner_reads_the_effective_user_from_proc(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    _fake_process(proc, 77, 999, 4343, "27 4343")
    (proc / "self").mkdir()
    assert socket_owner([999], proc) == Identity(4343, frozenset({27, 4343}))
    assert socket_owner([998], proc) is None


def test_external_repository_is_checked_for_the_user_triton_runs_as(tmp_path: Path) -> None:
    cfg = _external(tmp_path)
    owner = Path(cfg.triton.model_repository or "").stat().st_uid  # owner-writable (0755/0644) for this uid
    _fake_process(tmp_path / "fake-root" / "proc", 77, 999, owner, "")
    report = HardeningReport(model_control="disabled", listeners=(999,))
    host = make_host(tmp_path, hardening_check=lambda url, ports: report, connect=lambda host, port: True)
    writable = by_name(run_checks(cfg, host))["repository.writable"]
    assert writable.status is Status.WARN and f"uid {owner}" in writable.message
    assert "unknown" not in writable.message
    host = make_host(tmp_path, hardening_check=lambda url, ports: HardeningReport(model_control="disabled"),
                     connect=lambda host, port: True)
    unknown = by_name(run_checks(cfg, host))["repository.writable"]
    assert "Triton's user is unknown" in unknown.message and "uid 4242" in unknown.message


# ---- model repository ----

def test_pycache_directory_fails_naming_it(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    repo = Path(cfg.triton.model_repository or "")
    (repo / "add_sub" / "1" / "__pycache__").mkdir()
    (repo / "add_sub" / "1" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    (repo / "add_sub" / "__pycache__").touch()  # an empty file: the managed snapshot's blocker, not bytecode
    finding = by_name(run_checks(cfg, make_host(tmp_path)))["repository.bytecode"]
    assert finding.status is Status.FAIL
    assert "add_sub/1/__pycache__" in finding.message and "add_sub/__pycache__" not in finding.message
    hint = finding.hint or ""
    assert "delete them" in hint and "read-only bind mount" in hint and "chmod -R a-w" in hint
    assert "PYTHONDONTWRITEBYTECODE" in hint


def test_writable_repository_warns(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    (Path(cfg.triton.model_repository or "") / "add_sub" / "1").chmod(0o777)
    finding = by_name(run_checks(cfg, make_host(tmp_path)))["repository.writable"]
    assert finding.status is Status.WARN and "add_sub/1" in finding.message and "unready" in finding.message
    assert "read-only bind mount" in (finding.hint or "")


def _stat(mode: int, uid: int, gid: int) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 1, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize(("mode", "user", "read_only", "expected"), [
    (0o100644, Identity(1000), False, True),  # owner bit
    (0o100444, Identity(1000), False, False),
    (0o100664, Identity(2000, frozenset({100})), False, True),  # group bit
    (0o100644, Identity(2000, frozenset({100})), False, False),
    (0o100646, Identity(2000), False, True),  # other bit
    (0o100444, Identity(0), False, True),  # root ignores mode bits...
    (0o100644, Identity(0), True, False),  # ...but not a read-only mount
    (0o100666, Identity(1000), True, False),
])
def test_writable_by_follows_the_kernel_rules(mode: int, user: Identity, read_only: bool, expected: bool) -> None:
    assert writable_by(_stat(mode, 1000, 100), user, read_only) is expected


def test_symlink_loop_is_reported_not_raised(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    link = Path(cfg.triton.model_repository or "") / "add_sub" / "loop"
    link.symlink_to(link)
    finding = by_name(run_checks(cfg, make_host(tmp_path)))["repository.symlinks"]
    assert finding.status is Status.FAIL and "add_sub/loop -> (symlink loop)" in finding.message


def test_symlink_leaving_the_repository_fails(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    outside = tmp_path / "elsewhere.py"
    outside.write_text("x = 1\n")
    (Path(cfg.triton.model_repository or "") / "add_sub" / "1" / "helper.py").symlink_to(outside)
    finding = by_name(run_checks(cfg, make_host(tmp_path)))["repository.symlinks"]
    assert finding.status is Status.FAIL and "add_sub/1/helper.py" in finding.message


def test_empty_and_missing_repositories_fail(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = make_config(tmp_path, triton={"model_repository": str(empty)})
    finding = by_name(run_checks(cfg, make_host(tmp_path)))["repository"]
    assert finding.status is Status.FAIL and "holds no models" in finding.message
    cfg = make_config(tmp_path, triton={"model_repository": str(tmp_path / "absent")})
    findings = by_name(run_checks(cfg, make_host(tmp_path)))
    assert "does not exist" in findings["repository"].message and "repository.bytecode" not in findings


def test_managed_mode_defaults_to_the_demo_repository(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, triton={"model_repository": None})
    host = make_host(tmp_path, demo_repository=lambda: tmp_path / "models")
    finding = by_name(run_checks(cfg, host))["repository"]
    assert finding.status is Status.OK and "packaged demo models" in finding.message


# ---- ports ----

def test_port_held_by_another_socket_fails_naming_it(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        cfg = make_config(tmp_path, listen={"address": "127.0.0.1", "port": port})
        findings = by_name(run_checks(cfg, make_host(tmp_path, bind=doctor.bind_error)))
    finding = findings["port.listen"]
    assert finding.status is Status.FAIL and f"port {port}" in finding.message
    assert f"ss -ltnp 'sport = :{port}'" in (finding.hint or "")


def test_free_port_binds(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert doctor.bind_error("127.0.0.1", port) is None


def test_managed_triton_ports_and_duplicates(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, triton={"http_port": 9464, "grpc_port": 8001})
    bound: list[tuple[str, int]] = []
    host = make_host(tmp_path, bind=lambda address, port: bound.append((address, port)))
    findings = by_name(run_checks(cfg, host))
    duplicate = findings["port.triton-http"]
    assert duplicate.status is Status.FAIL and "configured twice" in duplicate.message
    assert findings["port.triton-grpc"].status is Status.OK
    assert ("127.0.0.1", 8001) in bound and ("127.0.0.1", 8443) in bound


# ---- clock ----

def test_clock_before_the_vendor_roots_fails(tmp_path: Path) -> None:
    host = make_host(tmp_path, now=lambda: datetime(2019, 6, 1, tzinfo=UTC))
    findings = run_checks(make_config(tmp_path), host)
    clock = by_name(findings)["clock"]
    assert clock.status is Status.FAIL and "AMD Milan ARK" in clock.message and "not yet valid" in clock.message
    assert exit_code(findings) == 2


def test_clock_before_this_release_fails(tmp_path: Path) -> None:
    host = make_host(tmp_path, now=lambda: doctor.RELEASE_NOT_BEFORE - timedelta(days=1))
    clock = by_name(run_checks(make_config(tmp_path), host))["clock"]
    assert clock.status is Status.FAIL and "this ratls release" in clock.message


@pytest.mark.parametrize(("seconds", "status"), [(5, Status.OK), (-90, Status.WARN), (400, Status.FAIL)])
def test_skew_thresholds(seconds: int, status: Status) -> None:
    finding = check_skew(NOW + timedelta(seconds=seconds), NOW, "https://time.example")
    assert finding.status is status and f"{abs(seconds)} s" in finding.message


def test_time_url_is_compared_with_the_midpoint(tmp_path: Path) -> None:
    ticks = iter([NOW, NOW + timedelta(seconds=2)])
    host = make_host(tmp_path, now=lambda: next(ticks, NOW), fetch_date=lambda url: NOW + timedelta(seconds=1))
    findings = run_checks(make_config(tmp_path), host, time_url="https://time.example")
    skew = by_name(findings)["clock.skew"]
    assert skew.status is Status.OK and "0 s" in skew.message


def test_time_url_rejected_by_tls_blames_the_clock() -> None:
    def fetch(url: str) -> datetime:
        raise urllib.error.URLError(ssl.SSLCertVerificationError("certificate is not yet valid"))

    finding = measure_skew("https://time.example", fetch, lambda: NOW)
    assert finding.status is Status.FAIL and "clock is probably wrong" in (finding.hint or "")


# ---- vendor roots ----

def test_bundled_roots_match_their_pins() -> None:
    findings = doctor.check_vendor_roots(doctor.load_vendor_roots(Host()))
    assert [f.status for f in findings] == [Status.OK] * 4


def test_a_root_that_is_not_the_pinned_one_fails() -> None:
    real = shipped_roots()
    swapped = {**real, Product.GENOA: real[Product.MILAN]}

    def broken_intel() -> Any:
        raise EvidenceError("the shipped Intel SGX Root CA does not have the pinned fingerprint")

    findings = by_name(doctor.check_vendor_roots(doctor.load_vendor_roots(
        Host(amd_roots=lambda: swapped, intel_root=broken_intel))))
    assert findings["roots.amd-milan"].status is Status.OK
    assert findings["roots.amd-genoa"].status is Status.FAIL and "ARK/ASK/ASVK" in findings["roots.amd-genoa"].message
    assert findings["roots.intel"].status is Status.FAIL and "reinstall" in (findings["roots.intel"].hint or "")
    assert doctor.clock_bounds(VendorRoots())[0] == [("this ratls release", doctor.RELEASE_NOT_BEFORE)]


# ---- rate limits ----

def test_per_client_rate_limit_warns_about_nat(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, filters={"limits": {"per_client_rate_limit": {"requests_per_second": 50}}})
    finding = by_name(run_checks(cfg, make_host(tmp_path)))["rate-limits"]
    assert finding.status is Status.WARN and "50/s burst 100" in finding.message and "NAT" in finding.message
    assert "evidence 2/s burst 4" in finding.message


def test_rate_limits_without_filters_are_not_applied(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, filters={"enabled": False, "limits": {"rate_limit": {"requests_per_second": 5}}})
    finding = by_name(run_checks(cfg, make_host(tmp_path)))["rate-limits"]
    assert finding.status is Status.WARN and "NOT applied" in finding.message


# ---- the command ----

def test_json_output_is_a_list_of_findings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    make_config(tmp_path, identity={"platform": "sim"})
    monkeypatch.setattr(doctor, "default_host", lambda: make_host(tmp_path))
    args = argparse.Namespace(config=str(tmp_path / "gateway.yaml"), json=True, time_url=None)
    assert doctor.cmd_doctor(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out, list) and out[0]["name"] == "config"
    assert all(set(item) == {"name", "status", "message", "hint"} for item in out)
    assert {item["status"] for item in out} <= {"ok", "warn", "fail"}
    assert any(item["status"] == "warn" and item["name"] == "tee.platform" for item in out)


def test_cli_runs_doctor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from ratls.cli import main

    for name in [n for n in os.environ if n.startswith("RATLS_GATEWAY__")]:
        monkeypatch.delenv(name)
    make_config(tmp_path)
    monkeypatch.setattr(doctor, "default_host", lambda: make_host(tmp_path))
    assert main(["doctor", "-c", str(tmp_path / "gateway.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("ok    config: ") and "0 failed" in out

    (tmp_path / "bad.yaml").write_text("version: 1\nlisten:\n  prot: 1\n")
    assert main(["doctor", "-c", str(tmp_path / "bad.yaml"), "--json"]) == 2
    [finding] = json.loads(capsys.readouterr().out)
    assert finding["status"] == "fail" and "listen.prot: unknown key" in finding["message"]
    assert finding["hint"] == "did you mean 'port'?"

    assert main(["doctor", "-c", str(tmp_path / "gateway.yaml"), "--time-url", "http://time.example"]) == 2
    assert "not an https:// URL" in capsys.readouterr().err
