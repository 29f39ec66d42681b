"""Collect SEV-SNP evidence inside the guest: configfs-tsm first, /dev/sev-guest as fallback."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from ...errors import CollectionError
from ...tsm import DEFAULT_ROOT, TsmFilesystem, collect_report
from .abi import REPORT_SIZE, parse_cert_table

TSM_PROVIDER = "sev_guest"
SEV_GUEST_DEVICE = Path("/dev/sev-guest")


@dataclass(frozen=True)
class SnpCollected:
    report: bytes
    certs: dict[str, bytes]  # from the extended report's certificate table (may be empty)
    source: str


def collect_configfs(report_data: bytes, *, root: Path = DEFAULT_ROOT, vmpl: int | None = None,
                     fs: TsmFilesystem | None = None) -> SnpCollected:
    got = collect_report(report_data, expected_provider=TSM_PROVIDER, root=root, privlevel=vmpl, fs=fs)
    if len(got.outblob) != REPORT_SIZE:
        raise CollectionError(f"sev_guest returned a {len(got.outblob)}-byte report, expected {REPORT_SIZE}")
    certs = parse_cert_table(got.auxblob) if got.auxblob else {}
    return SnpCollected(got.outblob, certs, f"configfs-tsm:{root}")


# ---- legacy /dev/sev-guest ioctl (linux/sev-guest.h) ----

class _GuestRequest(ctypes.Structure):
    _fields_ = [("msg_version", ctypes.c_uint8), ("req_data", ctypes.c_uint64),
                ("resp_data", ctypes.c_uint64), ("exitinfo2", ctypes.c_uint64)]


class _ReportReq(ctypes.Structure):
    _fields_ = [("user_data", ctypes.c_uint8 * 64), ("vmpl", ctypes.c_uint32), ("rsvd", ctypes.c_uint8 * 28)]


class _ExtReportReq(ctypes.Structure):
    _fields_ = [("data", _ReportReq), ("certs_address", ctypes.c_uint64), ("certs_len", ctypes.c_uint32)]


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord("S") << 8) | nr


SNP_GET_EXT_REPORT = _iowr(0x2, ctypes.sizeof(_GuestRequest))
RESPONSE_SIZE = 4000
REPORT_OFFSET_IN_RESPONSE = 0x20  # MSG_REPORT_RSP: status, report_size, 24 reserved bytes
VMM_ERR_INVALID_LEN = 1
PAGE = 4096


def collect_sev_guest(report_data: bytes, *, vmpl: int = 0, device: Path = SEV_GUEST_DEVICE) -> SnpCollected:
    if len(report_data) != 64:
        raise CollectionError(f"report_data must be 64 bytes, got {len(report_data)}")
    try:
        fd = os.open(device, os.O_RDWR)
    except OSError as exc:
        raise CollectionError(f"cannot open {device}: {exc.strerror}",
                              hint="load the sev-guest driver and run as root, or use configfs-tsm") from None
    try:
        certs_len = 4 * PAGE
        for _ in range(3):
            certs_buf = ctypes.create_string_buffer(certs_len)
            req = _ExtReportReq()
            ctypes.memmove(req.data.user_data, report_data, 64)
            req.data.vmpl = vmpl
            req.certs_address = ctypes.addressof(certs_buf)
            req.certs_len = certs_len
            resp = ctypes.create_string_buffer(RESPONSE_SIZE)
            guest = _GuestRequest(msg_version=1, req_data=ctypes.addressof(req), resp_data=ctypes.addressof(resp))
            try:
                fcntl.ioctl(fd, SNP_GET_EXT_REPORT, guest)
            except OSError as exc:
                vmm_error = guest.exitinfo2 >> 32
                if exc.errno == errno.EINVAL and vmm_error == VMM_ERR_INVALID_LEN and req.certs_len > certs_len:
                    certs_len = req.certs_len
                    continue
                raise CollectionError(f"SNP_GET_EXT_REPORT failed: {exc.strerror} (fw/vmm error "
                                      f"0x{guest.exitinfo2:x})") from None
            status = int.from_bytes(resp.raw[0:4], "little")
            size = int.from_bytes(resp.raw[4:8], "little")
            if status != 0 or size != REPORT_SIZE:
                raise CollectionError(f"firmware returned status {status:#x}, report size {size}")
            report = resp.raw[REPORT_OFFSET_IN_RESPONSE:REPORT_OFFSET_IN_RESPONSE + REPORT_SIZE]
            table = certs_buf.raw[: req.certs_len] if req.certs_len else b""
            certs = parse_cert_table(table) if table.strip(b"\0") else {}
            return SnpCollected(report, certs, f"ioctl:{device}")
        raise CollectionError("host kept asking for a larger certificate buffer")
    finally:
        os.close(fd)


def collect(report_data: bytes, *, tsm_root: Path = DEFAULT_ROOT, device: Path = SEV_GUEST_DEVICE,
            vmpl: int | None = None, fs: TsmFilesystem | None = None) -> SnpCollected:
    """configfs-tsm when present, else the legacy device; a clear error when neither is."""
    if (fs or TsmFilesystem()).exists(tsm_root):
        return collect_configfs(report_data, root=tsm_root, vmpl=vmpl, fs=fs)
    if device.exists():
        return collect_sev_guest(report_data, vmpl=vmpl or 0, device=device)
    raise CollectionError(f"no SEV-SNP guest interface: neither {tsm_root} nor {device} exists",
                          hint="run inside an SEV-SNP confidential VM, or use --platform sim for testing")
