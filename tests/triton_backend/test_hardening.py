"""The hardening check against real Triton processes (loopback, 0.0.0.0, explicit control)."""

from __future__ import annotations

from pathlib import Path

import pytest

from triton_backend import hardening
from triton_backend.demo import demo_repository
from triton_backend.launch import TritonConfig, TritonProcess

pytestmark = pytest.mark.slow


def test_hardened_triton_passes(triton: TritonProcess) -> None:
    report = hardening.check(triton.http_url, [triton.config.http_port, triton.config.grpc_port,
                                               triton.config.metrics_port])
    assert report.ok, report.problems
    assert report.version == "2.51.0" and report.model_control == "disabled"
    assert report.exposed == [] and report.answered


def test_triton_on_all_interfaces_detected() -> None:
    with TritonProcess(TritonConfig(demo_repository(), address="0.0.0.0")) as proc:
        report = hardening.check(proc.http_url, [proc.config.http_port, proc.config.grpc_port])
    assert not report.ok
    assert f"0.0.0.0:{proc.config.http_port}" in report.exposed
    assert any("all interfaces" in p for p in report.problems)


def test_explicit_model_control_detected() -> None:
    with TritonProcess(TritonConfig(demo_repository(), model_control_mode="explicit",
                                    extra_args=["--load-model=*"])) as proc:
        report = hardening.check(proc.http_url, [proc.config.http_port])
    assert report.model_control == "explicit"
    assert any("model control 'explicit'" in p for p in report.problems)


def test_unreachable_upstream() -> None:
    from triton_backend.launch import free_port
    report = hardening.check(f"http://127.0.0.1:{free_port()}", [])
    assert not report.ok and "does not answer" in report.problems[0]
    assert report.answered is False  # the gateway waits for this one; other findings refuse at once


def test_proc_net_parsing(tmp_path) -> None:
    (tmp_path / "tcp").write_text(
        "  sl  local_address rem_address   st\n"
        "   0: 0100007F:1F90 00000000:0000 0A\n"
        "   1: 00000000:1F91 00000000:0000 0A\n"
        "   2: 0100007F:1F92 0100007F:9999 01\n")
    (tmp_path / "tcp6").write_text(
        "  sl  local_address rem_address   st\n"
        "   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A\n")
    assert hardening.listening_addresses(0x1F90, tmp_path) == ["127.0.0.1"]
    assert hardening.listening_addresses(0x1F91, tmp_path) == ["0.0.0.0", "::"]
    assert hardening.listening_addresses(0x1F92, tmp_path) == []


def test_listener_inodes_change_when_another_socket_binds(tmp_path: Path) -> None:
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    row = "   0: 0100007F:1F40 00000000:0000 {st} 00000000:00000000 00:00000000 00000000  1000        0 {inode} 1\n"
    (tmp_path / "tcp").write_text(header + row.format(st="0A", inode=4711) + row.format(st="01", inode=99))
    assert hardening.listener_inodes([8000], tmp_path) == (4711,)
    (tmp_path / "tcp").write_text(header + row.format(st="0A", inode=4712))
    assert hardening.listener_inodes([8000], tmp_path) == (4712,)
    assert hardening.listener_inodes([8001], tmp_path) == ()
