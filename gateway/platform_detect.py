"""Which TEE are we in? configfs-tsm's provider first, then the legacy SNP device."""

from __future__ import annotations

import secrets
from pathlib import Path

from ratls.errors import ConfigError
from ratls.tsm import DEFAULT_ROOT, TsmFilesystem

PROVIDERS = {"sev_guest": "sev-snp", "tdx_guest": "tdx"}
SEV_GUEST_DEVICE = Path("/dev/sev-guest")
TDX_GUEST_DEVICE = Path("/dev/tdx_guest")


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


def detect(tsm_root: Path = DEFAULT_ROOT, sev_device: Path = SEV_GUEST_DEVICE,
           tdx_device: Path = TDX_GUEST_DEVICE, fs: TsmFilesystem | None = None) -> str:
    provider = _tsm_provider(tsm_root, fs or TsmFilesystem())
    if provider is not None:
        platform = PROVIDERS.get(provider)
        if platform is None:
            raise ConfigError(f"configfs-tsm provider '{provider}' is not supported")
        return platform
    if sev_device.exists():
        return "sev-snp"
    if tdx_device.exists():
        raise ConfigError("this is an Intel TDX guest but configfs-tsm is not available, and TDX quotes are only "
                          "collected through configfs-tsm",
                          hint="use a guest kernel >= 6.7 and mount configfs at /sys/kernel/config")
    raise ConfigError("no TEE detected: neither configfs-tsm nor /dev/sev-guest is present, so no hardware "
                      "evidence can be produced",
                      hint="run inside an SEV-SNP or TDX confidential VM, or set identity.platform: sim "
                           "(RATLS_GATEWAY__IDENTITY__PLATFORM=sim) for development")
