"""``ratls doctor``'s clock and vendor root checks: the bundled AMD and Intel roots match their pins,
and the clock lies within their validity (and, optionally, agrees with an HTTPS server)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509

from ratls.errors import RatlsError
from ratls.platforms.snp.abi import Product
from ratls.platforms.snp.certs import PINNED_FINGERPRINTS, ProductRoots
from ratls.platforms.tdx.verify import INTEL_ROOT_SHA256
from ratls.x509util import fingerprint

from .findings import Finding, _examples, fail, ok, warn
from .host import Host

# The earliest instant this release can have been built (bump it with ratls.__version__): a
# clock before it cannot be right, even when it is after every bundled root's not-before.
RELEASE_NOT_BEFORE = datetime(2026, 12, 1, tzinfo=UTC)
SKEW_WARN = timedelta(seconds=60)
SKEW_FAIL = timedelta(minutes=5)


# ---- clock and vendor roots ----

@dataclass
class VendorRoots:
    amd: dict[Product, ProductRoots] | None = None
    amd_error: str | None = None
    intel: x509.Certificate | None = None
    intel_error: str | None = None


def load_vendor_roots(host: Host) -> VendorRoots:
    roots = VendorRoots()
    try:
        roots.amd = host.amd_roots()
    except (RatlsError, OSError) as exc:
        roots.amd_error = str(exc)
    try:
        roots.intel = host.intel_root()
    except (RatlsError, OSError, ValueError) as exc:
        roots.intel_error = str(exc)
    return roots


def check_vendor_roots(roots: VendorRoots) -> list[Finding]:
    hint = "the installation is damaged or was tampered with; reinstall ratls-gateway"
    findings: list[Finding] = []
    if roots.amd is None:
        findings.append(fail("roots.amd", f"the bundled AMD roots do not load: {roots.amd_error}", hint))
    else:
        for product in Product:
            findings.append(_check_amd_product(product, roots.amd.get(product), hint))
    if roots.intel is None:
        findings.append(fail("roots.intel", f"the bundled Intel SGX Root CA does not load: {roots.intel_error}", hint))
    elif fingerprint(roots.intel) != INTEL_ROOT_SHA256:
        findings.append(fail("roots.intel", "the bundled Intel SGX Root CA does not match the pinned fingerprint",
                             hint))
    else:
        findings.append(ok("roots.intel", f"Intel SGX Root CA matches the pin (sha256 {INTEL_ROOT_SHA256[:16]}…)"))
    return findings


def _check_amd_product(product: Product, roots: ProductRoots | None, hint: str) -> Finding:
    name = f"roots.amd-{product.value}"
    if roots is None:
        return fail(name, f"no bundled AMD roots for {product.title}", hint)
    certs = {"ark": roots.ark, "ask": roots.ask, "asvk": roots.asvk}
    wrong = [role.upper() for role, cert in certs.items()
             if cert is None or fingerprint(cert) != PINNED_FINGERPRINTS[(product, role)]]
    if wrong:
        return fail(name, f"AMD {product.title} {'/'.join(wrong)} do not match the pinned fingerprints", hint)
    ark = PINNED_FINGERPRINTS[(product, "ark")]
    return ok(name, f"AMD {product.title} ARK/ASK/ASVK match the pins (ARK sha256 {ark[:16]}…)")


def clock_bounds(roots: VendorRoots) -> tuple[list[tuple[str, datetime]], list[tuple[str, datetime]]]:
    """(not-before, not-after) of every loaded root, plus this release as a not-before."""
    certs: list[tuple[str, x509.Certificate]] = []
    for product, pr in (roots.amd or {}).items():
        certs += [(f"AMD {product.title} {role}", c) for role, c in (("ARK", pr.ark), ("ASK", pr.ask),
                                                                      ("ASVK", pr.asvk)) if c is not None]
    if roots.intel is not None:
        certs.append(("Intel SGX Root CA", roots.intel))
    floors = [(label, c.not_valid_before_utc) for label, c in certs]
    floors.append(("this ratls release", RELEASE_NOT_BEFORE))
    return floors, [(label, c.not_valid_after_utc) for label, c in certs]


def check_clock(now: datetime, floors: list[tuple[str, datetime]],
                ceilings: list[tuple[str, datetime]]) -> Finding:
    hint = "set the clock (timedatectl set-ntp true, or chronyc makestep) and check the guest's time source"
    shown = f"{now:%Y-%m-%d %H:%M:%S} UTC"
    early = sorted((when, label) for label, when in floors if now < when)
    if early:
        labels = [label for _, label in early]
        return fail("clock", f"the system clock says {shown}, before the not-before of {_examples(labels)} "
                    f"(up to {early[-1][0]:%Y-%m-%d}): every certificate would look not yet valid", hint)
    expired = sorted(label for label, when in ceilings if now > when)
    if expired:
        return fail("clock", f"the system clock says {shown}, after the not-after of {_examples(expired)}", hint)
    return ok("clock", f"{shown} is after every bundled root's not-before and this release")


def check_skew(local: datetime, remote: datetime, url: str) -> Finding:
    skew = local - remote
    seconds = abs(skew.total_seconds())
    message = (f"the system clock is {seconds:.0f} s {'ahead of' if skew > timedelta(0) else 'behind'} the Date "
               f"header of {url}")
    hint = "synchronise the clock (timedatectl set-ntp true, or chronyc makestep)"
    if abs(skew) > SKEW_FAIL:
        return fail("clock.skew", message, hint)
    if abs(skew) > SKEW_WARN:
        return warn("clock.skew", message, hint)
    return ok("clock.skew", message)


def measure_skew(url: str, fetch: Callable[[str], datetime], now: Callable[[], datetime]) -> Finding:
    before = now()
    try:
        remote = fetch(url)
    except (OSError, ValueError, TypeError, RatlsError) as exc:
        reason = getattr(exc, "reason", exc)
        hint = "check the URL and the network; any HTTPS server that sends a Date header will do"
        if isinstance(reason, ssl.SSLCertVerificationError) and ("not yet valid" in str(reason)
                                                                  or "expired" in str(reason)):
            hint = "its certificate looks not yet valid or expired from here: the local clock is probably wrong"
        return fail("clock.skew", f"cannot read the time from {url}: {reason}", hint)
    after = now()
    # the server stamped its answer somewhere between our two readings: compare with the midpoint
    return check_skew(before + (after - before) / 2, remote, url)
