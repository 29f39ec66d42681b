"""Platform detection through the registry: each platform answers from a fake device tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from ratls import registry
from ratls.errors import ConfigError
from ratls.host_probe import HostProbe, Runner
from ratls.testing.fake_tsm import FakeTsm
from ratls.tsm import TsmFilesystem


def detect(tmp_path: Path, tsm_root: Path | None = None, *, fs: TsmFilesystem | None = None,
           run: Runner | None = None) -> str:
    # /dev/sev-guest, /dev/tdx_guest, /dev/tpmrm0 are looked for under tmp_path
    return registry.detect(HostProbe(tsm_root or tmp_path / "tsm", fs=fs, locate=lambda p: tmp_path / p.name,
                                     run=run))


def test_no_tee_refuses_with_a_way_out(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no TEE detected") as info:
        detect(tmp_path)
    assert "identity.platform: sim" in str(info.value)


def test_legacy_sev_guest_device(tmp_path: Path) -> None:
    (tmp_path / "sev-guest").touch()
    assert detect(tmp_path) == "sev-snp"


def test_tdx_device_without_configfs_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "tdx_guest").touch()
    with pytest.raises(ConfigError, match="Intel TDX guest but configfs-tsm is not available"):
        detect(tmp_path)


@pytest.mark.parametrize(("provider", "platform"), [("tdx_guest", "tdx"), ("sev_guest", "sev-snp")])
def test_configfs_provider_decides(tmp_path: Path, provider: str, platform: str) -> None:
    tsm = FakeTsm(tmp_path / "tsm", lambda data, level: (b"", None), provider=provider)
    (tmp_path / "sev-guest").touch()  # configfs wins over the legacy device
    assert detect(tmp_path, tsm.root, fs=tsm) == platform
    assert not any(tsm.root.iterdir())  # the probe entry is removed


def test_unknown_provider_is_named(tmp_path: Path) -> None:
    tsm = FakeTsm(tmp_path / "tsm", lambda data, level: (b"", None), provider="arm_cca_guest")
    (tmp_path / "sev-guest").touch()  # a legacy device does not hide an unsupported configfs-tsm provider
    with pytest.raises(ConfigError, match="arm_cca_guest"):
        detect(tmp_path, tsm.root, fs=tsm)


@pytest.mark.parametrize(("vm", "platform"), [("snp_milan_trustee", "azure-snp-vtpm"),
                                              ("tdx_trustee", "azure-tdx-vtpm")])
def test_azure_vtpm_is_detected_from_the_hcl_report(tmp_path: Path, vectors: Path, vm: str, platform: str) -> None:
    (tmp_path / "tpmrm0").touch()
    calls: list[list[str]] = []

    def nvread(args: list[str], work: Path) -> None:  # replays the vTPM's NV index (no vTPM here)
        assert args[0] == "tpm2_nvread" and "0x01400001" in args
        calls.append(args)
        (work / "hcl.bin").write_bytes((vectors / "azure" / vm / "hcl_report.bin").read_bytes())

    assert detect(tmp_path, run=nvread) == platform
    assert len(calls) == 1  # both Azure platforms asked; the vTPM was read once


def test_plain_tpm_is_not_azure(tmp_path: Path) -> None:
    from ratls.errors import CollectionError

    (tmp_path / "tpmrm0").touch()

    def no_index(args: list[str], work: Path) -> None:
        raise CollectionError("tpm2_nvread failed: the handle is not correct")

    with pytest.raises(ConfigError, match="no TEE detected"):
        detect(tmp_path, run=no_index)
