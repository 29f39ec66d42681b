"""Revocation: an ARK-signed CRL revoking the ASK rejects evidence; bad CRLs fail closed."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from ratls.pipeline import verify_evidence
from ratls.platforms.sim.chain import SimChain, generate_chain
from ratls.platforms.sim.platform import SimPlatform
from ratls.trust import Trust

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def chain() -> SimChain:
    return generate_chain()


def make_crl(chain: SimChain, revoked: list[int], *, next_update: dt.datetime | None = None,
             key=None) -> bytes:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(chain.ark.subject)
               .last_update(NOW - dt.timedelta(days=1)).next_update(next_update or NOW + dt.timedelta(days=7)))
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW - dt.timedelta(hours=1)).build())
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    crl = builder.sign(key or chain.ark_key, hashes.SHA384(), rsa_padding=pss)
    return crl.public_bytes(serialization.Encoding.DER)


def verify(chain: SimChain, **trust_kw):
    platform = SimPlatform(chain=chain)
    evidence = platform.collect(bytes(64))
    return verify_evidence(evidence, policy=None, now=NOW, trust=Trust(simulated_roots=(chain.root_sha256,),
                                                                      **trust_kw))


def failures(appraisal) -> dict[str, str]:
    return {c.name: c.detail for c in appraisal.failures}


def test_clean_crl_passes(chain: SimChain) -> None:
    appraisal = verify(chain, crls=[make_crl(chain, [0x999])])
    assert appraisal.ok
    assert any(c.name == "snp.crl" and c.ok for c in appraisal.checks)


def test_revoked_ask_rejected(chain: SimChain) -> None:
    got = failures(verify(chain, crls=[make_crl(chain, [chain.ask.serial_number])]))
    assert list(got) == ["snp.crl"] and "revoked" in got["snp.crl"]


def test_expired_crl_rejected(chain: SimChain) -> None:
    got = failures(verify(chain, crls=[make_crl(chain, [], next_update=NOW - dt.timedelta(seconds=1))]))
    assert list(got) == ["snp.crl"] and "expired" in got["snp.crl"]


def test_forged_crl_rejected(chain: SimChain) -> None:
    other = generate_chain()
    forged = make_crl(chain, [], key=other.ark_key)
    got = failures(verify(chain, crls=[forged]))
    assert list(got) == ["snp.crl"] and "invalid signature" in got["snp.crl"]


def test_required_crl_missing(chain: SimChain) -> None:
    got = failures(verify(chain, require_crl=True))
    assert list(got) == ["snp.crl"]
