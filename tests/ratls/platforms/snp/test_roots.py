"""The shipped AMD roots are the public ones, byte for byte (fingerprints checked)."""

from __future__ import annotations

import re
from pathlib import Path

from ratls.platforms.snp.certs import PINNED_FINGERPRINTS, fingerprint, shipped_roots


def test_shipped_roots_match_pins() -> None:
    roots = shipped_roots()
    for (product, role), expected in PINNED_FINGERPRINTS.items():
        cert = getattr(roots[product], role)
        assert fingerprint(cert) == expected


def test_pins_match_published_fingerprints(vectors: Path) -> None:
    text = (vectors / "amd_roots" / "FINGERPRINTS.txt").read_text()
    published = {(m[0], m[1]): m[2] for m in re.findall(r"(\w+)/(\w+)\.pem: .*sha256\(DER\)=([0-9a-f]{64})", text)}
    assert len(published) == 9
    for (product, role), expected in PINNED_FINGERPRINTS.items():
        assert published[(product.value, role)] == expected


def test_roots_are_self_signed_and_sign_intermediates() -> None:
    for roots in shipped_roots().values():
        roots.ark.verify_directly_issued_by(roots.ark)
        roots.ask.verify_directly_issued_by(roots.ark)
        assert roots.asvk is not None
        roots.asvk.verify_directly_issued_by(roots.ark)
