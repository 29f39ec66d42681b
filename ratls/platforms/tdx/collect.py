"""Collect a TDX quote inside the guest through configfs-tsm (provider ``tdx_guest``):
inblob = REPORTDATA (64 bytes), outblob = the quote produced by the host's quoting enclave."""

from __future__ import annotations

from pathlib import Path

from ...errors import CollectionError, EvidenceError
from ...tsm import DEFAULT_ROOT, TsmFilesystem, collect_report
from .abi import parse_quote

TSM_PROVIDER = "tdx_guest"


def collect_quote(report_data: bytes, *, root: Path = DEFAULT_ROOT, fs: TsmFilesystem | None = None) -> bytes:
    got = collect_report(report_data, expected_provider=TSM_PROVIDER, root=root, fs=fs)
    try:
        quote = parse_quote(got.outblob)
    except EvidenceError as exc:
        raise CollectionError(f"tdx_guest returned something that is not a TDX quote: {exc.message}",
                              hint="check that the host runs a TDX quoting enclave (QGS) reachable over "
                                   "vsock") from None
    if quote.body.report_data != report_data:
        raise CollectionError("the quote's REPORTDATA is not the value written to inblob",
                              hint="another process may share this configfs-tsm entry")
    # Trailing padding is part of what the kernel returned but not of the quote; keep it out of the
    # certificate so the evidence is the quote and nothing else.
    return quote.raw[: len(quote.raw) - quote.trailing]
