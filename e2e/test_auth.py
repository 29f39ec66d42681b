"""Optional client authentication on the real stack: API keys (stored hashed), JWT against a
JWKS, and mutual TLS - each mapped to the models it may call."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.client
import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from .stack import Stack, start_stack

pytestmark = pytest.mark.slow
ALICE, BOB = "alice-key-0123456789", "bob-key-9876543210"
INFER = json.dumps({"inputs": [
    {"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [1]},
    {"name": "INPUT1", "shape": [1], "datatype": "FP32", "data": [2]}]}).encode()
TEXT = json.dumps({"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(key: ec.EllipticCurvePrivateKey, claims: dict, kid: str = "k1") -> str:
    head = _b64(json.dumps({"alg": "ES256", "kid": kid, "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{head}.{body}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("auth")
    jwt_key = ec.generate_private_key(ec.SECP256R1())
    nums = jwt_key.public_key().public_numbers()
    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "x": _b64(nums.x.to_bytes(32, "big")),
                      "y": _b64(nums.y.to_bytes(32, "big"))}]}
    (d / "jwks.json").write_text(json.dumps(jwks))
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("test client CA")).issuer_name(_name("test client CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1)).add_extension(x509.BasicConstraints(ca=True, path_length=0),
                                                                     critical=True).sign(ca_key, hashes.SHA256()))
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = (x509.CertificateBuilder().subject_name(_name("carol")).issuer_name(ca.subject)
              .public_key(client_key.public_key()).serial_number(2).not_valid_before(now - dt.timedelta(hours=1))
              .not_valid_after(now + dt.timedelta(days=1)).sign(ca_key, hashes.SHA256()))
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "client.pem").write_bytes(client.public_bytes(serialization.Encoding.PEM))
    (d / "client.key").write_bytes(client_key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
    return {"dir": d, "jwt_key": jwt_key}


@pytest.fixture(scope="module")
def astack(sim_state: Path, material: dict) -> Iterator[Stack]:
    d = material["dir"]
    auth = {
        "api_keys": {"header": "x-api-key", "keys": [
            {"name": "alice", "sha256": hashlib.sha256(ALICE.encode()).hexdigest(), "models": ["add_sub"]},
            {"name": "bob", "sha256": hashlib.sha256(BOB.encode()).hexdigest(), "models": "*"}]},
        "jwt": {"issuer": "https://issuer.test", "audiences": ["ratls-gateway"], "jwks_file": str(d / "jwks.json"),
                "models_claim": "models"},
        "mtls": {"client_ca_file": str(d / "ca.pem"), "clients": [{"subject": "CN=carol",
                                                                   "models": ["text_transform"]}]},
    }
    s = start_stack({"filters": {"auth": auth}}, sim_dir=sim_state)
    yield s
    s.stop()


def call(stack: Stack, path: str, body: bytes | None = None, headers: dict | None = None,
         client_cert: tuple[Path, Path] | None = None) -> tuple[int, bytes]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if client_cert:
        ctx.load_cert_chain(*client_cert)
    conn = http.client.HTTPSConnection("127.0.0.1", stack.port, context=ctx, timeout=10)
    conn.request("POST" if body else "GET", path, body=body,
                 headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def test_no_credentials(astack: Stack) -> None:
    status, data = call(astack, "/v2/models/add_sub/infer", INFER)
    assert status == 401 and b"unauthenticated" in data
    assert call(astack, "/v2/health/ready")[0] == 200  # health stays open for orchestrators
    assert call(astack, "/.well-known/ratls/certificate")[0] == 200  # verification needs no account


def test_api_keys_map_to_models(astack: Stack) -> None:
    assert call(astack, "/v2/models/add_sub/infer", INFER, {"x-api-key": ALICE})[0] == 200
    status, data = call(astack, "/v2/models/text_transform/infer", TEXT, {"x-api-key": ALICE})
    assert status == 403 and b"text_transform" in data
    assert call(astack, "/v2/models/text_transform/infer", TEXT, {"x-api-key": BOB})[0] == 200
    assert call(astack, "/v2/models/add_sub/infer", INFER, {"x-api-key": "guess"})[0] == 401


def test_jwt(astack: Stack, material: dict) -> None:
    now = int(dt.datetime.now(dt.UTC).timestamp())
    good = make_jwt(material["jwt_key"], {"iss": "https://issuer.test", "aud": "ratls-gateway", "sub": "dave",
                                          "exp": now + 300, "models": ["text_transform"]})
    assert call(astack, "/v2/models/text_transform/infer", TEXT, {"Authorization": f"Bearer {good}"})[0] == 200
    assert call(astack, "/v2/models/add_sub/infer", INFER, {"Authorization": f"Bearer {good}"})[0] == 403
    expired = make_jwt(material["jwt_key"], {"iss": "https://issuer.test", "aud": "ratls-gateway",
                                             "exp": now - 3600, "models": ["text_transform"]})
    assert call(astack, "/v2/models/text_transform/infer", TEXT, {"Authorization": f"Bearer {expired}"})[0] == 401
    forged = make_jwt(ec.generate_private_key(ec.SECP256R1()), {"iss": "https://issuer.test", "aud": "ratls-gateway",
                                                                "exp": now + 300, "models": ["*"]})
    assert call(astack, "/v2/models/add_sub/infer", INFER, {"Authorization": f"Bearer {forged}"})[0] == 401
    wrong_aud = make_jwt(material["jwt_key"], {"iss": "https://issuer.test", "aud": "other", "exp": now + 300,
                                               "models": ["*"]})
    assert call(astack, "/v2/models/add_sub/infer", INFER, {"Authorization": f"Bearer {wrong_aud}"})[0] == 401


def test_mutual_tls(astack: Stack, material: dict) -> None:
    d = material["dir"]
    cert = (d / "client.pem", d / "client.key")
    assert call(astack, "/v2/models/text_transform/infer", TEXT, client_cert=cert)[0] == 200
    assert call(astack, "/v2/models/add_sub/infer", INFER, client_cert=cert)[0] == 403


def test_grpc_with_api_key(astack: Stack) -> None:
    grpcurl = str(Path(sys.executable).parent / "grpcurl")
    infer = json.dumps({"model_name": "{model}", "inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [1], "contents": {"fp32_contents": [1]}},
        {"name": "INPUT1", "datatype": "FP32", "shape": [1], "contents": {"fp32_contents": [2]}}]})
    base = [grpcurl, "-insecure", "-H", f"x-api-key: {ALICE}"]
    ok = subprocess.run([*base, "-d", infer.replace("{model}", "add_sub"), f"127.0.0.1:{astack.port}",
                         "inference.GRPCInferenceService/ModelInfer"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    denied = subprocess.run([*base, "-d", '{"name": "text_transform"}', f"127.0.0.1:{astack.port}",
                             "inference.GRPCInferenceService/ModelMetadata"], capture_output=True, text=True,
                            timeout=30)
    assert "PermissionDenied" in denied.stderr
    anonymous = subprocess.run([grpcurl, "-insecure", "-d", '{"name": "add_sub"}', f"127.0.0.1:{astack.port}",
                                "inference.GRPCInferenceService/ModelMetadata"], capture_output=True, text=True,
                               timeout=30)
    assert "Unauthenticated" in anonymous.stderr


def test_credentials_never_logged(astack: Stack) -> None:
    call(astack, "/v2/models/add_sub/infer", INFER, {"x-api-key": ALICE})
    import time
    time.sleep(1.5)
    text = (astack.workdir / "run" / "access.log").read_text() + astack.log()
    assert ALICE not in text and BOB not in text
