"""AMD Key Distribution Service client with an on-disk cache and a strict offline mode.

Tests and CI never reach the network: the default is offline, and a fetch that is not in
the cache then fails with a message saying how to supply the certificate instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ...errors import EvidenceError
from ...fileutil import write_atomic
from ...httpget import bounded_get
from .abi import Product, SnpReport

DEFAULT_BASE_URL = "https://kdsintf.amd.com"
MAX_RESPONSE = 64 * 1024


@dataclass
class KdsClient:
    cache_dir: Path | None = None
    offline: bool = True
    base_url: str = DEFAULT_BASE_URL
    timeout: float = 10.0

    def vcek_url(self, product: Product, report: SnpReport) -> str:
        tcb = report.reported_tcb
        if product == Product.TURIN:
            hwid = report.chip_id[:8].hex()
            query = f"fmcSPL={tcb.fmc}&blSPL={tcb.bl}&teeSPL={tcb.tee}&snpSPL={tcb.snp}&ucodeSPL={tcb.ucode}"
        else:
            hwid = report.chip_id.hex()
            query = f"blSPL={tcb.bl}&teeSPL={tcb.tee}&snpSPL={tcb.snp}&ucodeSPL={tcb.ucode}"
        return f"{self.base_url}/vcek/v1/{product.title}/{hwid}?{query}"

    def chain_url(self, product: Product, kind: str = "vcek") -> str:
        return f"{self.base_url}/{kind}/v1/{product.title}/cert_chain"

    def crl_url(self, product: Product, kind: str = "vcek") -> str:
        return f"{self.base_url}/{kind}/v1/{product.title}/crl"

    def _cache_path(self, url: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / hashlib.sha256(url.encode()).hexdigest()

    def fetch(self, url: str) -> bytes:
        cached = self._cache_path(url)
        if cached is not None and cached.is_file():
            return cached.read_bytes()
        if self.offline:
            raise EvidenceError(f"offline mode: {url} is not in the KDS cache",
                                hint="pass the certificate with --vcek/--chain, or allow fetching with --online")
        body = bounded_get(url, service="AMD KDS", max_bytes=MAX_RESPONSE, timeout=self.timeout,
                           status_hint="the chip ID or TCB may be wrong, or KDS is rate limiting (retry later)")
        if cached is not None:
            write_atomic(cached, body)
        return body

    def fetch_vcek(self, product: Product, report: SnpReport) -> bytes:
        if report.signer_info.mask_chip_key or not any(report.chip_id):
            raise EvidenceError("the report hides CHIP_ID, so its VCEK cannot be looked up",
                                hint="supply the VCEK/VLEK with --vcek (VLEKs come from the cloud provider)")
        return self.fetch(self.vcek_url(product, report))
