"""``ratls doctor``'s TEE checks: the platform, and the device or configfs-tsm entry evidence is
collected from."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ratls import registry
from ratls.errors import RatlsError
from ratls.host_probe import HostProbe
from ratls.registry import CollectionNeeds
from ratls.tsm import TsmFilesystem

from ..config import GatewayConfig
from .findings import Finding, fail, ok, warn
from .host import Host, Identity

# ---- TEE ----

def check_platform(configured: str, detected: str | None, error: RatlsError | None) -> Finding:
    if registry.simulated(configured):
        here = f"; this VM is a {detected} guest" if detected else ""
        return warn("tee.platform", f"identity.platform is '{configured}': SIMULATED platform, the certificates "
                    f"carry NO hardware evidence and no production policy accepts them{here}",
                    hint=f"for production set identity.platform: auto (or {detected or 'the TEE name'}) on the "
                         "confidential VM; keep sim for development")
    if detected is None:
        message = error.message if error else "no TEE detected"
        return fail("tee.platform", message, hint=error.hint if error else None)
    if configured == "auto":
        return ok("tee.platform", f"detected {detected} (identity.platform: auto)")
    if configured != detected:
        return fail("tee.platform", f"identity.platform is '{configured}' but this VM is a {detected} guest",
                    hint=f"set identity.platform: {detected} (or auto)")
    return ok("tee.platform", f"detected {detected}, as configured")


@dataclass(frozen=True)
class DeviceState:
    path: Path
    exists: bool
    error: OSError | None = None  # why opening it read-write failed
    mode: int = 0
    group: str | None = None


def probe_device(path: Path, host: Host) -> DeviceState:
    try:
        st = os.stat(path)
    except OSError:
        return DeviceState(path, exists=False)
    try:
        host.open_device(path)
    except OSError as exc:
        return DeviceState(path, True, exc, stat.S_IMODE(st.st_mode), host.group_name(st.st_gid))
    return DeviceState(path, True, None, stat.S_IMODE(st.st_mode), host.group_name(st.st_gid))


def _access_hint(device: DeviceState, user: Identity) -> str:
    if device.group and device.group != "root" and device.mode & 0o060:
        return (f"run as root or add the user to group {device.group} "
                f"(usermod -aG {device.group} {user.login}, then log in again)")
    return (f"run as root, or grant a group access with a udev rule (GROUP=\"<group>\", MODE=\"0660\" for "
            f"{device.path.name}) and add {user.login} to that group")


def check_device(name: str, device: DeviceState, user: Identity) -> Finding:
    if not device.exists:
        return fail(name, f"{device.path} does not exist")
    if device.error is None:
        return ok(name, f"{device.path} present and opens read-write for {user.name}")
    if device.error.errno in (errno.EACCES, errno.EPERM):
        return fail(name, f"{device.path} exists but {user.name} cannot open it (mode {device.mode:04o}, "
                    f"group {device.group})", hint=_access_hint(device, user))
    return fail(name, f"{device.path} exists but does not open: {device.error.strerror}",
                hint="the guest driver may not be loaded or working; see dmesg")


@dataclass(frozen=True)
class TsmState:
    root: Path
    exists: bool
    error: OSError | None = None  # creating (or reading) a report entry failed
    provider: str | None = None


def probe_tsm(root: Path, fs: TsmFilesystem) -> TsmState:
    """Create and remove one report entry, as evidence collection does: configfs-tsm's
    directory can be present but not writable (a container without CAP_SYS_ADMIN)."""
    if not root.is_dir():
        return TsmState(root, exists=False)
    entry = root / f"ratls-doctor-{secrets.token_hex(4)}"  # never an entry a crashed run left behind
    try:
        fs.mkdir(entry)
    except OSError as exc:
        return TsmState(root, True, exc)
    try:
        return TsmState(root, True, provider=fs.read(entry / "provider").decode(errors="replace").strip())
    except OSError as exc:
        return TsmState(root, True, exc)
    finally:
        try:
            fs.rmdir(entry)
        except OSError:
            pass


def check_tsm(tsm: TsmState, expected_provider: str | None, user: Identity, *, required: bool) -> Finding:
    name = "tee.configfs-tsm"
    if not tsm.exists:
        message = f"{tsm.root} does not exist (configfs-tsm is not mounted or not in this kernel)"
        hint = ("mount configfs (mount -t configfs none /sys/kernel/config) on a guest kernel >= 6.7 with "
                "CONFIG_TSM_REPORTS; in a container, mount the host's configfs and set identity.tsm_root")
        return fail(name, message, hint) if required else warn(name, message + "; using the legacy device", hint)
    if tsm.error is not None:
        return fail(name, f"{tsm.root} is not writable by {user.name}: {tsm.error.strerror}",
                    hint="run as root or with CAP_SYS_ADMIN (a container needs the host's configfs mounted "
                         "read-write)")
    if expected_provider is not None and tsm.provider != expected_provider:
        return fail(name, f"configfs-tsm provider is '{tsm.provider}', expected '{expected_provider}'",
                    hint="this machine runs a different TEE than identity.platform names")
    return ok(name, f"{tsm.root} mounted and writable (provider {tsm.provider})")


def check_tpm_tools(which: Callable[[str], str | None], tools: tuple[str, ...] = ("tpm2_nvread", "tpm2_quote")
                    ) -> Finding:
    missing = [tool for tool in tools if which(tool) is None]
    if missing:
        return fail("tee.tpm2-tools", f"{', '.join(missing)} not found on PATH (the vTPM evidence is read with "
                    "tpm2-tools)", hint="install tpm2-tools (apt install tpm2-tools)")
    return ok("tee.tpm2-tools", f"{' and '.join(tools)} found")


def _detect(cfg: GatewayConfig, host: Host) -> tuple[str | None, RatlsError | None]:
    try:
        return registry.detect(HostProbe(host.path(cfg.identity.tsm_root), fs=host.tsm_fs, locate=host.path,
                                         run=host.run_tpm2)), None
    except RatlsError as exc:
        return None, exc


def _collection_findings(needs: CollectionNeeds, cfg: GatewayConfig, host: Host) -> list[Finding]:
    if needs.tsm_provider is None:  # a device (and tools) only: the Azure vTPM
        findings: list[Finding] = []
        if needs.device is not None:
            findings.append(check_device(needs.device_check, probe_device(host.path(needs.device), host), host.user))
        if needs.tools:
            findings.append(check_tpm_tools(host.which, needs.tools))
        return findings
    tsm = probe_tsm(host.path(cfg.identity.tsm_root), host.tsm_fs)
    if needs.tsm_required or needs.device is None or tsm.exists:
        # collection uses configfs-tsm whenever it is there, without falling back
        return [check_tsm(tsm, needs.tsm_provider, host.user, required=True)]
    legacy = probe_device(host.path(needs.device), host)
    return [check_tsm(tsm, None, host.user, required=not legacy.exists),
            check_device(needs.device_check, legacy, host.user)]


def tee_findings(cfg: GatewayConfig, host: Host) -> list[Finding]:
    configured = cfg.identity.platform
    detected, error = _detect(cfg, host)
    findings = [check_platform(configured, detected, error)]
    platform = detected if configured == "auto" else configured
    if platform is None:
        return findings  # nothing found: the finding above says so
    needs = registry.lookup(platform).needs
    if needs is None:
        return findings  # nothing to collect from (sim)
    return [*findings, *_collection_findings(needs, cfg, host)]
