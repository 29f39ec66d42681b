"""Reference values a device's evidence names but a certificate does not carry (NVIDIA's RIMs,
tens of KiB each, the same for a whole fleet: stapling them would push certificates past what
TLS clients accept - Go's crypto/tls, so grpcurl, refuses handshake messages over 64 KiB).

They are signed by their vendor, so where they come from does not matter for trust: the verifier
checks each one's signature, chain, version and chip. The client asks the server it is verifying
(``/.well-known/ratls/rims/<id>``), over a connection that trusts only the certificate under
verification, before any request of the caller's is sent; documents it already has (``--rim-dir``,
or fetched before) are not asked for again."""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from dataclasses import replace

from .. import registry
from ..cert import load_x509, parse_ratls
from ..errors import EvidenceError
from ..trust import Trust
from .fetch import Target

REFERENCES_PATH = "/.well-known/ratls/rims/"
MAX_REFERENCE = 1 << 20
MAX_REFERENCES = 32
log = logging.getLogger("ratls.client")


def _held(trust: Trust, ref_id: str) -> bool:
    if ref_id in trust.device_references:
        return True
    folder = trust.nvidia_rim_dir  # the verifier's own RIMs are never asked of the server
    return folder is not None and any((folder / f"{ref_id}{ext}").is_file() for ext in (".xml", ".swidtag"))


def wanted(der: bytes, trust: Trust) -> list[str]:
    """The reference IDs the certificate's devices name that the verifier does not hold yet."""
    try:
        rc = parse_ratls(load_x509(der))
        ids: list[str] = []
        for device in rc.devices:
            kind = next((d for d in registry.device_types() if d.media_type == device.media_type), None)
            if kind is not None:
                ids += [i for i in kind.reference_ids(device) if not _held(trust, i)]
    except (EvidenceError, ValueError, TypeError):
        return []  # the pipeline says why; nothing to fetch for a certificate it cannot read
    return list(dict.fromkeys(ids))[:MAX_REFERENCES]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would leave the connection pinned to the certificate under verification (and
    could point anywhere, plain HTTP included): it is an answer without the document."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def] # noqa: ANN001
        return None


def _get(url: str, der: bytes, timeout: float) -> bytes | None:
    from .pinning import context_trusting
    opener = urllib.request.build_opener(_NoRedirects(), urllib.request.HTTPSHandler(context=context_trusting(der)))
    try:
        with opener.open(url, timeout=timeout) as resp:
            body = resp.read(MAX_REFERENCE + 1)
    except urllib.error.HTTPError as exc:
        log.info("server has no reference %s (HTTP %d)", url.rsplit("/", 1)[-1], exc.code)
        return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.info("cannot fetch reference %s: %s", url, exc)
        return None
    return body if len(body) <= MAX_REFERENCE else None


def with_references(target: Target, der: bytes, trust: Trust | None, *, timeout: float = 10.0) -> Trust:
    """*trust* plus the reference documents the server holds for its certificate's devices, all
    fetched within *timeout* seconds in total. A missing document is not an error here: the
    verifier then fails the checks that needed it."""
    trust = trust or Trust()
    ids = wanted(der, trust)
    if not ids:
        return trust
    from .pinning import origin
    found = dict(trust.device_references)
    deadline = time.monotonic() + timeout
    for ref_id in ids:
        left = deadline - time.monotonic()
        if left <= 0:
            log.info("reference fetch budget of %.0fs spent; %s not fetched", timeout, ref_id)
            break
        body = _get(f"{origin(target)}{REFERENCES_PATH}{ref_id}", der, left)
        if body is not None:
            found[ref_id] = body
    return replace(trust, device_references=found)
