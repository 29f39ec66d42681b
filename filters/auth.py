"""Client authentication (optional, off by default): API keys stored as SHA-256 hashes, JWTs
checked against a configured JWKS, and mutual TLS with a client CA; each identity is mapped to
the models it may call. Parsing and decisions are pure; the gateway serves them to Envoy's
ext_authz filter (Envoy has no native filter for hashed keys or claim-to-model mapping)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ratls.errors import ConfigError

ALL = "*"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    models: tuple[str, ...] | str  # tuple of names, or "*"


@dataclass(frozen=True)
class JwtConfig:
    issuer: str
    audiences: tuple[str, ...]
    jwks: dict[str, Any]
    jwks_sha256: str
    models_claim: str = "models"
    leeway_s: int = 60


@dataclass(frozen=True)
class MtlsClient:
    subject: str  # RFC 4514 subject of the client certificate, e.g. "CN=alice"
    models: tuple[str, ...] | str


@dataclass(frozen=True)
class AuthPolicy:
    api_key_header: str = "x-api-key"
    api_keys: tuple[ApiKey, ...] = ()
    jwt: JwtConfig | None = None
    mtls_ca_pem: bytes | None = None
    mtls_clients: tuple[MtlsClient, ...] = ()
    exempt_categories: tuple[str, ...] = ("health",)

    @property
    def enabled(self) -> bool:
        return bool(self.api_keys or self.jwt or self.mtls_ca_pem)

    def canonical(self) -> dict[str, Any]:
        return {
            "api_key_header": self.api_key_header,
            "api_keys": [{"name": k.name, "sha256": k.sha256, "models": list(k.models) if k.models != ALL else ALL}
                         for k in sorted(self.api_keys, key=lambda k: k.name)],
            "jwt": None if self.jwt is None else {"issuer": self.jwt.issuer, "audiences": sorted(self.jwt.audiences),
                                                  "jwks_sha256": self.jwt.jwks_sha256,
                                                  "models_claim": self.jwt.models_claim},
            "mtls": None if self.mtls_ca_pem is None else {
                "client_ca_sha256": hashlib.sha256(self.mtls_ca_pem).hexdigest(),
                "clients": [{"subject": c.subject, "models": list(c.models) if c.models != ALL else ALL}
                            for c in sorted(self.mtls_clients, key=lambda c: c.subject)]},
            "exempt_categories": sorted(self.exempt_categories),
        }


def _models(value: Any, path: str) -> tuple[str, ...] | str:
    if value in (None, ALL):
        return ALL
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(sorted(value))
    raise ConfigError(f"{path}: expected a list of model names or '*'")


def _read_file(value: Any, path: str) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(f"{path}: expected a file path")
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {value}: {exc.strerror}") from None


def parse_auth(data: Any, path: str = "filters.auth") -> AuthPolicy:
    if data is None:
        return AuthPolicy()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping")
    known = {"api_keys", "jwt", "mtls", "exempt_categories"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{path}.{key}: unknown key", hint=f"known keys: {', '.join(sorted(known))}")
    header, keys = "x-api-key", []
    ak = data.get("api_keys")
    if ak is not None:
        if not isinstance(ak, dict):
            raise ConfigError(f"{path}.api_keys: expected a mapping with 'header' and 'keys'")
        header = str(ak.get("header", header)).lower()
        for i, entry in enumerate(ak.get("keys") or []):
            p = f"{path}.api_keys.keys[{i}]"
            if not isinstance(entry, dict) or set(entry) - {"name", "sha256", "models"}:
                raise ConfigError(f"{p}: expected name, sha256 and models")
            digest = str(entry.get("sha256", "")).lower()
            if not _HEX64.match(digest):
                raise ConfigError(f"{p}.sha256: expected the SHA-256 of the key (64 hex digits), never the key",
                                  hint="printf %s \"$KEY\" | sha256sum")
            keys.append(ApiKey(str(entry.get("name") or f"key{i}"), digest, _models(entry.get("models"), p)))
    jwt = None
    jd = data.get("jwt")
    if jd is not None:
        p = f"{path}.jwt"
        if not isinstance(jd, dict) or set(jd) - {"issuer", "audiences", "jwks_file", "models_claim"}:
            raise ConfigError(f"{p}: expected issuer, audiences, jwks_file, models_claim")
        raw = _read_file(jd.get("jwks_file"), f"{p}.jwks_file")
        try:
            jwks = json.loads(raw)
        except ValueError:
            jwks = None
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise ConfigError(f"{p}.jwks_file: not a JWKS document ({{\"keys\": [...]}})")
        if not isinstance(jd.get("issuer"), str):
            raise ConfigError(f"{p}.issuer: required")
        audiences = jd.get("audiences") or []
        jwt = JwtConfig(jd["issuer"], tuple(audiences), jwks, hashlib.sha256(raw).hexdigest(),
                        str(jd.get("models_claim", "models")))
    ca, clients = None, []
    md = data.get("mtls")
    if md is not None:
        p = f"{path}.mtls"
        if not isinstance(md, dict):
            raise ConfigError(f"{p}: expected a mapping")
        ca = _read_file(md.get("client_ca_file"), f"{p}.client_ca_file")
        try:
            x509.load_pem_x509_certificates(ca)
        except ValueError:
            raise ConfigError(f"{p}.client_ca_file: not a PEM certificate bundle") from None
        for i, entry in enumerate(md.get("clients") or []):
            clients.append(MtlsClient(str(entry["subject"]), _models(entry.get("models"), f"{p}.clients[{i}]")))
    exempt = tuple(data.get("exempt_categories", ["health"]))
    return AuthPolicy(header, tuple(keys), jwt, ca, tuple(clients), exempt)


# ---- decisions (pure) ----

@dataclass
class Decision:
    allowed: bool
    status: int  # 200, 401 or 403
    identity: str | None = None
    reason: str = ""
    remove_headers: list[str] = field(default_factory=list)


def _allows(models: tuple[str, ...] | str, model: str | None) -> bool:
    return model is None or models == ALL or model in models


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _jwk_key(jwk: dict[str, Any]) -> Any:
    if jwk.get("kty") == "RSA":
        n = int.from_bytes(_b64url(jwk["n"]), "big")
        e = int.from_bytes(_b64url(jwk["e"]), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if jwk.get("kty") == "EC" and jwk.get("crv") in ("P-256", "P-384"):
        curve = ec.SECP256R1() if jwk["crv"] == "P-256" else ec.SECP384R1()
        x = int.from_bytes(_b64url(jwk["x"]), "big")
        y = int.from_bytes(_b64url(jwk["y"]), "big")
        return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
    raise ValueError("unsupported JWK")


def verify_jwt(token: str, cfg: JwtConfig, now: datetime) -> dict[str, Any]:
    """Verify a compact JWS (RS256/PS256/ES256/ES384) and its registered claims; raise ValueError."""
    try:
        head_b64, body_b64, sig_b64 = token.split(".")
        header = json.loads(_b64url(head_b64))
        claims = json.loads(_b64url(body_b64))
        signature = _b64url(sig_b64)
    except (ValueError, TypeError) as exc:
        raise ValueError("malformed token") from exc
    alg, kid = header.get("alg"), header.get("kid")
    candidates = [k for k in cfg.jwks.get("keys", []) if kid is None or k.get("kid") == kid]
    if not candidates:
        raise ValueError("no JWKS key for this token")
    signed = f"{head_b64}.{body_b64}".encode()
    for jwk in candidates:
        try:
            key = _jwk_key(jwk)
            if alg == "RS256" and isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            elif alg == "PS256" and isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, signed, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
            elif alg in ("ES256", "ES384") and isinstance(key, ec.EllipticCurvePublicKey):
                size = 32 if alg == "ES256" else 48
                if len(signature) != 2 * size:
                    raise ValueError("bad signature length")
                der = encode_dss_signature(int.from_bytes(signature[:size], "big"),
                                           int.from_bytes(signature[size:], "big"))
                key.verify(der, signed, ec.ECDSA(hashes.SHA256() if alg == "ES256" else hashes.SHA384()))
            else:
                continue
            break
        except (InvalidSignature, ValueError, KeyError):
            continue
    else:
        raise ValueError(f"signature does not verify (alg {alg})")
    ts = now.timestamp()
    if not isinstance(claims.get("exp"), (int, float)) or ts > claims["exp"] + cfg.leeway_s:
        raise ValueError("token expired or has no exp")
    if isinstance(claims.get("nbf"), (int, float)) and ts + cfg.leeway_s < claims["nbf"]:
        raise ValueError("token not yet valid")
    if claims.get("iss") != cfg.issuer:
        raise ValueError("wrong issuer")
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    if cfg.audiences and not set(auds) & set(cfg.audiences):
        raise ValueError("wrong audience")
    return claims


def decide(policy: AuthPolicy, headers: dict[str, str], model: str | None, client_subject: str | None,
           now: datetime) -> Decision:
    """Authenticate by any configured method, then check the model the request names."""
    remove = [policy.api_key_header, "authorization"]
    presented = False
    key = headers.get(policy.api_key_header)
    if key and policy.api_keys:
        presented = True
        digest = hashlib.sha256(key.encode()).hexdigest()
        for entry in policy.api_keys:
            if hmac.compare_digest(entry.sha256, digest):
                if _allows(entry.models, model):
                    return Decision(True, 200, f"api-key:{entry.name}", remove_headers=remove)
                return Decision(False, 403, f"api-key:{entry.name}", f"not allowed to call model '{model}'")
    auth = headers.get("authorization", "")
    if policy.jwt is not None and auth.lower().startswith("bearer "):
        presented = True
        try:
            claims = verify_jwt(auth[7:].strip(), policy.jwt, now)
        except ValueError as exc:
            return Decision(False, 401, None, f"invalid token: {exc}")
        granted = claims.get(policy.jwt.models_claim, [])
        if isinstance(granted, str):
            granted = granted.split()
        allowed = ALL if granted == ALL or ALL in granted else tuple(granted)
        subject = f"jwt:{claims.get('sub', '?')}"
        if _allows(allowed, model):
            return Decision(True, 200, subject, remove_headers=remove)
        return Decision(False, 403, subject, f"not allowed to call model '{model}'")
    if policy.mtls_ca_pem is not None and client_subject:
        presented = True
        for client in policy.mtls_clients:
            if client.subject == client_subject:
                if _allows(client.models, model):
                    return Decision(True, 200, f"mtls:{client.subject}", remove_headers=remove)
                return Decision(False, 403, f"mtls:{client.subject}", f"not allowed to call model '{model}'")
    return Decision(False, 401 if not presented else 401, None, "credentials missing or not recognised")
