"""Where RIMs come from: a local directory, an on-disk cache, and (only when allowed) NVIDIA's RIM
service. Strictly offline by default, like the AMD KDS client: tests and CI never reach the
network, and a RIM that is not on disk is then simply not available.

Nothing here verifies a RIM (``rim_verify`` does, every time it is used): a fetched document is
only checked to read as a RIM before it is cached, so a broken answer is not kept.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from pathlib import Path

from ...errors import EvidenceError, RatlsError
from ...evidence import FetchFailed
from ...fileutil import write_atomic
from ...httpget import bounded_get
from .rim import MAX_RIM_SIZE, parse_rim

DEFAULT_SERVICE_URL = "https://rim.attestation.nvidia.com/v1/rim/"
# The JSON wraps base64 of the XML (4/3 larger) plus a few small fields.
MAX_RESPONSE = MAX_RIM_SIZE * 4 // 3 + 16 * 1024
SUFFIXES = (".xml", ".swidtag")
# NV_GPU_DRIVER_GH100_550.90.07, NV_GPU_VBIOS_1010_0200_882_96009F0001: the ID is built from
# report fields, so it is attacker-influenced and must never be a path or change the URL.
_RIM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

Fetch = Callable[[str], bytes]


def http_fetch(url: str, timeout: float = 10.0) -> bytes:
    """GET *url*, at most ``MAX_RESPONSE`` bytes; every failure is an ``EvidenceError``."""
    return bounded_get(url, service="the NVIDIA RIM service", max_bytes=MAX_RESPONSE, timeout=timeout,
                       status_hint="the driver or VBIOS version may have no published RIM")


class RimStore:
    """``get(rim_id)``: the RIM's XML from *directory* (``<id>.xml`` or ``<id>.swidtag``, the ID
    matched case-insensitively), else from *cache_dir*, else - only when not *offline* - from
    ``<service_url><id>`` (JSON ``{"rim": base64(XML)}``), which is then cached."""

    def __init__(self, directory: Path | None = None, cache_dir: Path | None = None, offline: bool = True,
                 service_url: str = DEFAULT_SERVICE_URL, *, fetch: Fetch | None = None) -> None:
        self.directory = directory
        self.cache_dir = cache_dir
        self.offline = offline
        self.service_url = service_url
        self._fetch = fetch or http_fetch

    def url(self, rim_id: str) -> str:
        return f"{self.service_url.rstrip('/')}/{rim_id}"

    def get(self, rim_id: str) -> bytes | FetchFailed | None:
        """The RIM's XML; None when it is on no disk and fetching is off (nothing was tried);
        ``FetchFailed`` with the reason when a file or the service could not deliver it."""
        if _RIM_ID.fullmatch(rim_id) is None or ".." in rim_id:
            return FetchFailed(f"{rim_id!r} is not a RIM ID", hint="RIM IDs look like NV_GPU_DRIVER_GH100_550.90.07")
        for folder, must_exist in ((self.directory, True), (self.cache_dir, False)):
            found = _find(folder, rim_id, must_exist) if folder is not None else None
            if found is not None:
                return found
        if self.offline:
            return None
        return self._download(rim_id)

    def _download(self, rim_id: str) -> bytes | FetchFailed:
        url = self.url(rim_id)
        try:
            xml = decode_service_response(self._fetch(url), url)
            parse_rim(xml)  # do not cache something that is not even a RIM
        except (RatlsError, OSError) as exc:
            return FetchFailed(f"RIM {rim_id}: {exc}", hint="put the RIM file in the RIM directory, or retry later")
        if self.cache_dir is not None:
            try:
                write_atomic(self.cache_dir / f"{rim_id.upper()}.xml", xml)
            except OSError:
                pass  # a cache that cannot be written costs a fetch next time, not this verification
        return xml


def decode_service_response(body: bytes, url: str) -> bytes:
    """The XML inside the RIM service's JSON answer ``{"rim": "<base64>", ...}``."""
    if len(body) > MAX_RESPONSE:
        raise EvidenceError(f"RIM service response for {url} is larger than {MAX_RESPONSE} bytes")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise EvidenceError(f"RIM service response for {url} is not JSON: {exc}") from None
    encoded = document.get("rim") if isinstance(document, dict) else None
    if not isinstance(encoded, str) or not encoded:
        raise EvidenceError(f"RIM service response for {url} has no \"rim\" string")
    try:
        xml = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EvidenceError(f"RIM service response for {url}: \"rim\" is not base64: {exc}") from None
    if len(xml) > MAX_RIM_SIZE:
        raise EvidenceError(f"RIM from {url} is larger than {MAX_RIM_SIZE} bytes")
    return xml


def _find(folder: Path, rim_id: str, must_exist: bool) -> bytes | FetchFailed | None:
    if not must_exist and not folder.is_dir():
        return None  # a cache that was never written to
    wanted = {f"{rim_id}{suffix}".casefold() for suffix in SUFFIXES}
    try:
        matches = sorted(p for p in folder.iterdir() if p.name.casefold() in wanted and p.is_file())
    except OSError as exc:
        return FetchFailed(f"cannot read the RIM directory {folder}: {exc.strerror or exc}")
    if not matches:
        return None
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches)
        return FetchFailed(f"RIM {rim_id} is in {folder} more than once ({names})", hint="keep one file per RIM ID")
    try:
        with matches[0].open("rb") as f:
            data = f.read(MAX_RIM_SIZE + 1)
    except OSError as exc:
        return FetchFailed(f"cannot read {matches[0]}: {exc.strerror or exc}")
    if len(data) > MAX_RIM_SIZE:
        return FetchFailed(f"{matches[0]} is larger than {MAX_RIM_SIZE} bytes, not a RIM")
    return data
