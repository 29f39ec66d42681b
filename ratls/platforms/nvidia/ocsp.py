"""OCSP for NVIDIA's device and RIM certificates (``https://ocsp.ndis.nvidia.com/``).

``build_ocsp_request`` makes the request NVIDIA's verifiers send (CertID with SHA-384, optional
nonce); ``check_ocsp`` judges a DER response for one certificate at an explicit time. Sending it
is the caller's business. Unlike NVIDIA's verifier we also check thisUpdate/nextUpdate and that
a delegated responder was authorised by the issuer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from ...appraisal import Check, failed, passed
from ...errors import UsageError
from ...x509util import X509_ERRORS
from .types import OcspStatus

DEFAULT_URL = "https://ocsp.ndis.nvidia.com/"
NAME = "gpu.ocsp"
DEFAULT_SKEW = timedelta(minutes=5)
_CERT_ID_HASHES = (hashes.SHA384, hashes.SHA1)  # NVIDIA asks with SHA-384; SHA-1 is RFC 6960's default


def build_ocsp_request(cert: x509.Certificate, issuer: x509.Certificate, nonce: bytes | None) -> bytes:
    """A DER OCSP request for *cert*, CertID hashed with SHA-384, with a nonce extension when given."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA384())
    if nonce is not None:
        if not 1 <= len(nonce) <= 32:
            raise UsageError(f"an OCSP nonce is 1 to 32 bytes (RFC 8954), not {len(nonce)}")
        # Critical, as NVIDIA's verifier sends it: a responder that ignores nonces must refuse.
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=True)
    return builder.build().public_bytes(Encoding.DER)


def check_ocsp(cert: x509.Certificate, issuer: x509.Certificate, response_der: bytes, now: datetime, *,
               nonce: bytes | None, name: str = NAME, skew: timedelta = DEFAULT_SKEW,
               allow_hold: bool = False) -> tuple[OcspStatus, Check]:
    """The certificate's status and a check named *name*. ``NOT_CHECKED`` (with a failed check)
    when the response cannot be trusted: not successful, not about *cert*, not signed by the
    issuer or a responder it authorised, outside its validity window, or without our nonce."""
    subject = cert.subject.rfc4514_string()
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    try:
        response = ocsp.load_der_ocsp_response(response_der)
    except ValueError as exc:
        return OcspStatus.NOT_CHECKED, failed(name, f"{subject}: not an OCSP response ({exc})")
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return OcspStatus.NOT_CHECKED, failed(name, f"{subject}: responder answered {response.response_status.name}")
    try:
        judged = _trusted_answer(response, cert, issuer, now, nonce, skew)
        if isinstance(judged, str):
            return OcspStatus.NOT_CHECKED, failed(name, f"{subject}: {judged}")
        return _status(judged, subject, name, allow_hold)
    except X509_ERRORS as exc:
        # cryptography decodes lazily: a malformed field (an embedded certificate's key, an
        # extension) only raises when it is read, anywhere in the judgement.
        return OcspStatus.NOT_CHECKED, failed(name, f"{subject}: malformed OCSP response ({exc})")


def _trusted_answer(response: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate, now: datetime,
                    nonce: bytes | None, skew: timedelta) -> ocsp.OCSPSingleResponse | str:
    """The single response about *cert* if the whole response can be trusted, else why not."""
    problem = _signature_problem(response, issuer, now) or _nonce_problem(response, nonce)
    if problem is not None:
        return problem
    single = _single_response(response, cert, issuer)
    if single is None:
        return "the response is not about this certificate (no matching CertID)"
    return _freshness_problem(single, now, skew) or single


def _status(single: ocsp.OCSPSingleResponse, subject: str, name: str,
            allow_hold: bool) -> tuple[OcspStatus, Check]:
    status = single.certificate_status
    if status == ocsp.OCSPCertStatus.GOOD:
        return OcspStatus.GOOD, passed(name, f"{subject}: good (this update {single.this_update_utc.isoformat()})")
    if status == ocsp.OCSPCertStatus.REVOKED:
        reason = single.revocation_reason
        when = single.revocation_time_utc.isoformat() if single.revocation_time_utc else "unknown time"
        if allow_hold and reason == x509.ReasonFlags.certificate_hold:
            return OcspStatus.REVOKED, passed(name, f"{subject}: on hold since {when}, allowed by policy")
        why = reason.name if reason is not None else "no reason given"
        return OcspStatus.REVOKED, failed(name, f"{subject}: revoked at {when} ({why})")
    # not a failure here: the policy decides (allow_unknown_ocsp), and refuses it by default
    return OcspStatus.UNKNOWN, passed(name, f"{subject}: the responder does not know this certificate (UNKNOWN)")


def _single_response(response: ocsp.OCSPResponse, cert: x509.Certificate,
                     issuer: x509.Certificate) -> ocsp.OCSPSingleResponse | None:
    for single in response.responses:
        if single.serial_number != cert.serial_number:
            continue
        algorithm = next((h for h in _CERT_ID_HASHES if isinstance(single.hash_algorithm, h)), None)
        if algorithm is None:
            continue
        # The library computes the CertID hashes exactly as a request for this pair would carry them.
        expected = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm()).build()
        if (single.issuer_name_hash, single.issuer_key_hash) == (expected.issuer_name_hash, expected.issuer_key_hash):
            return single
    return None


def _signature_problem(response: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime) -> str | None:
    """Why the response is not signed by the issuer or by a responder the issuer delegated to."""
    if _identifies(response, issuer):
        signer = issuer
    else:
        delegated = [c for c in response.certificates if _identifies(response, c)]
        if not delegated:
            return "signed by a responder that is neither the issuer nor a certificate in the response"
        signer = delegated[0]
        problem = _delegation_problem(signer, issuer, now)
        if problem:
            return problem
    try:
        _verify(signer.public_key(), response.signature, response.tbs_response_bytes, response.signature_hash_algorithm)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError) as exc:
        return f"response signature does not verify with {signer.subject.rfc4514_string()} ({type(exc).__name__})"
    return None


def _delegation_problem(responder: x509.Certificate, issuer: x509.Certificate, now: datetime) -> str | None:
    try:
        responder.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return f"responder {responder.subject.rfc4514_string()} was not issued by the certificate's issuer"
    try:
        usages = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
        return f"responder {responder.subject.rfc4514_string()} is not authorised for OCSP signing (no EKU)"
    if not responder.not_valid_before_utc <= now <= responder.not_valid_after_utc:
        return f"responder certificate {responder.subject.rfc4514_string()} is not valid at {now.isoformat()}"
    return None


def _identifies(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    """Whether the response's ResponderID (by name or by SHA-1 key hash) names *cert*."""
    if response.responder_name is not None:
        return response.responder_name == cert.subject
    key_hash = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest  # SHA-1 of the key bits
    return response.responder_key_hash == key_hash


def _verify(key: object, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm | None) -> None:
    if isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
        key.verify(signature, data, ec.ECDSA(algorithm))
    elif isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
        key.verify(signature, data, padding.PKCS1v15(), algorithm)
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        key.verify(signature, data)
    else:
        raise UnsupportedAlgorithm(f"cannot verify an OCSP response with a {type(key).__name__}")


def _nonce_problem(response: ocsp.OCSPResponse, nonce: bytes | None) -> str | None:
    if nonce is None:
        return None  # nothing to bind: freshness then rests on thisUpdate/nextUpdate alone
    try:
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return "the responder did not echo our nonce"
    if echoed != nonce:
        return f"the response's nonce {echoed.hex()[:16]}... is not ours ({nonce.hex()[:16]}...)"
    return None


def _freshness_problem(single: ocsp.OCSPSingleResponse, now: datetime, skew: timedelta) -> str | None:
    if single.this_update_utc > now + skew:
        return f"thisUpdate {single.this_update_utc.isoformat()} is in the future at {now.isoformat()}"
    # RFC 6960 lets nextUpdate be absent ("newer information is always available"): that gives
    # no bound on how stale the answer is, so we refuse it.
    if single.next_update_utc is None:
        return "the response has no nextUpdate: its freshness cannot be judged"
    if single.next_update_utc < now - skew:
        return f"stale: nextUpdate {single.next_update_utc.isoformat()} is before {now.isoformat()}"
    return None
