"""Which TEE are we in? configfs-tsm's provider first, then the legacy SNP device."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

from ratls.errors import ConfigError, RatlsError
from ratls.platforms.azure.collect import HCL_REPORT_INDEX, Runner, run_tpm2
from ratls.platforms.azure.hcl import REPORT_TYPE_SNP, parse_hcl_report
from ratls.tsm import DEFAULT_ROOT, TsmFilesystem

PROVIDERS = {"sev_guest": "sev-snp", "tdx_guest": "tdx"}
SEV_GUEST_DEVICE = Path("/dev/sev-guest")
TDX_GUEST_DEVICE = Path("/dev/tdx_guest")
TPM_DEVICE = Path("/dev/tpmrm0")


def _tsm_provider(root: Path, fs: TsmFilesystem) -> str | None:
    if not root.is_dir():
        return None
    entry = root / f"ratls-probe-{secrets.token_hex(4)}"
    try:
        fs.mkdir(entry)
    except OSError:
        return None
    try:
        return fs.read(entry / "provider").decode(errors="replace").strip()
    except OSError:
        return None
    finally:
        try:
            fs.rmdir(entry)
        except OSError:
            pass


def _azure_hcl_kind(tpm_device: Path, run: Runner) -> str | None:
    """An Azure confidential VM shows no TEE device to the guest, only a vTPM holding the
    paravisor's HCL report; its hardware report type tells SNP from TDX."""
    if not tpm_device.exists():
        return None
    try:
        with tempfile.TemporaryDirectory(prefix="ratls-probe-") as tmp:
            run(["tpm2_nvread", "-C", "o", "-o", "hcl.bin", HCL_REPORT_INDEX], Path(tmp))
            hcl = parse_hcl_report((Path(tmp) / "hcl.bin").read_bytes())
    except (RatlsError, OSError):
        return None  # a TPM without the HCL index: not an Azure confidential VM
    return "azure-snp-vtpm" if hcl.report_type == REPORT_TYPE_SNP else "azure-tdx-vtpm"


def detect(tsm_root: Path = DEFAULT_ROOT, sev_device: Path = SEV_GUEST_DEVICE,
           tdx_device: Path = TDX_GUEST_DEVICE, fs: TsmFilesystem | None = None,
           tpm_device: Path = TPM_DEVICE, run: Runner = run_tpm2) -> str:
    provider = _tsm_provider(tsm_root, fs or TsmFilesystem())
    if provider is not None:
        platform = PROVIDERS.get(provider)
        if platform is None:
            raise ConfigError(f"configfs-tsm provider '{provider}' is not supported")
        return platform
    if sev_device.exists():
        return "sev-snp"
    azure = _azure_hcl_kind(tpm_device, run)
    if azure is not None:
        return azure
    if tdx_device.exists():
        raise ConfigError("this is an Intel TDX guest but configfs-tsm is not available, and TDX quotes are only "
                          "collected through configfs-tsm",
                          hint="use a guest kernel >= 6.7 and mount configfs at /sys/kernel/config")
    raise ConfigError("no TEE detected: no configfs-tsm, /dev/sev-guest or Azure vTPM HCL report, so no hardware "
                      "evidence can be produced",
                      hint="run inside an SEV-SNP or TDX confidential VM, or set identity.platform: sim "
                           "(RATLS_GATEWAY__IDENTITY__PLATFORM=sim) for development")
