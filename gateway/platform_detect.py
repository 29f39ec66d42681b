"""Which TEE are we in? configfs-tsm's provider first, then the legacy SNP device."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ratls.errors import ConfigError
from ratls.tsm import DEFAULT_ROOT

PROVIDERS = {"sev_guest": "sev-snp", "tdx_guest": "tdx"}
SEV_GUEST_DEVICE = Path("/dev/sev-guest")
TDX_GUEST_DEVICE = Path("/dev/tdx_guest")


def _tsm_provider(root: Path) -> str | None:
    if not root.is_dir():
        return None
    entry = root / f"ratls-probe-{secrets.token_hex(4)}"
    try:
        os.mkdir(entry)
    except OSError:
        return None
    try:
        return (entry / "provider").read_text().strip()
    except OSError:
        return None
    finally:
        try:
            os.rmdir(entry)
        except OSError:
            pass


def detect(tsm_root: Path = DEFAULT_ROOT, sev_device: Path = SEV_GUEST_DEVICE,
           tdx_device: Path = TDX_GUEST_DEVICE) -> str:
    provider = _tsm_provider(tsm_root)
    if provider is not None:
        platform = PROVIDERS.get(provider)
        if platform is None:
            raise ConfigError(f"configfs-tsm provider '{provider}' is not supported")
        if platform == "tdx":
            raise ConfigError("this is an Intel TDX guest; TDX evidence is not supported by this version yet",
                              hint="run on SEV-SNP, or set identity.platform: sim for testing")
        return platform
    if sev_device.exists():
        return "sev-snp"
    if tdx_device.exists():
        raise ConfigError("this is an Intel TDX guest; TDX evidence is not supported by this version yet")
    raise ConfigError("no TEE detected: neither configfs-tsm nor /dev/sev-guest is present, so no hardware "
                      "evidence can be produced",
                      hint="run inside an SEV-SNP confidential VM, or set identity.platform: sim "
                           "(RATLS_GATEWAY__IDENTITY__PLATFORM=sim) for development")
