"""One bounded HTTPS GET for vendor services (AMD KDS, NVIDIA's RIM service): every failure is an
EvidenceError that names the service, and no answer is read past *max_bytes*."""

from __future__ import annotations

import urllib.error
import urllib.request

from .errors import EvidenceError


def bounded_get(url: str, *, service: str, max_bytes: int, timeout: float, status_hint: str | None = None) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - https, or a test loopback
            body = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise EvidenceError(f"{service} answered {exc.code} for {url}", hint=status_hint) from None
    except (urllib.error.URLError, OSError) as exc:
        raise EvidenceError(f"cannot reach {service} at {url}: {getattr(exc, 'reason', exc)}") from None
    if len(body) > max_bytes:
        raise EvidenceError(f"{service} response for {url} is larger than {max_bytes} bytes")
    return body
