"""Generate, persist and load the simulated AMD-style certificate chain and sign reports."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from ... import der
from ...errors import ConfigError
from ...fileutil import write_atomic
from ..snp import abi
from ..snp.certs import (
    OID_BL_SPL,
    OID_HWID,
    OID_PRODUCT_NAME,
    OID_SNP_SPL,
    OID_STRUCT_VERSION,
    OID_TEE_SPL,
    OID_UCODE_SPL,
    fingerprint,
    load_certificate,
)

SIM_TCB = {"bl": 3, "tee": 0, "snp": 8, "ucode": 115}
SIM_PRODUCT_NAME = "Milan-B0"
# The simulated launch digest: a fixed, recognisable value (not a hash of any real image).
DEFAULT_MEASUREMENT = hashlib.sha384(b"ratls-gateway simulated launch digest v1").digest()


def default_state_dir() -> Path:
    env = os.environ.get("RATLS_SIM_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ratls" / "sim"


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def _name(cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering (SIMULATED)"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ratls-gateway simulator - NOT AMD"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


@dataclass
class SimChain:
    ark: x509.Certificate
    ask: x509.Certificate
    vcek: x509.Certificate
    vcek_key: ec.EllipticCurvePrivateKey
    chip_id: bytes
    measurement: bytes
    # Only held in memory right after generation (tests use it to sign CRLs); never saved.
    ark_key: rsa.RSAPrivateKey | None = None

    @property
    def root_sha256(self) -> str:
        return fingerprint(self.ark)

    def sign_report(self, fields: abi.ReportFields) -> bytes:
        body = abi.build_unsigned_report(fields)
        signature = self.vcek_key.sign(bytes(body[: abi.SIGNED_LENGTH]), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(signature)
        sig = abi.encode_signature(r, s)
        body[abi.SIGNATURE_OFFSET : abi.SIGNATURE_OFFSET + len(sig)] = sig
        return bytes(body)

    def report_fields(self, report_data: bytes, **overrides: object) -> abi.ReportFields:
        fields = abi.ReportFields(
            report_data=report_data,
            measurement=self.measurement,
            version=5,
            reported_tcb=abi.TcbVersion.encode(**SIM_TCB),
            chip_id=self.chip_id,
            cpuid=(0x19, 0x01, 0x01),
            firmware=(1, 55, 21),
            platform_info=0x3,
        )
        for key, value in overrides.items():
            setattr(fields, key, value)
        return fields

    def endorsements(self) -> dict[str, bytes]:
        enc = serialization.Encoding.DER
        return {abi.Endorsement.VCEK: self.vcek.public_bytes(enc), abi.Endorsement.ASK: self.ask.public_bytes(enc),
                abi.Endorsement.ARK: self.ark.public_bytes(enc)}


def _builder(subject: x509.Name, issuer: x509.Name, public_key: object, serial: int,
             now: dt.datetime, years: int) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(serial)  # type: ignore[arg-type]
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365 * years)))


def generate_chain(now: dt.datetime | None = None, *, measurement: bytes = DEFAULT_MEASUREMENT) -> SimChain:
    now = now or dt.datetime.now(dt.UTC)
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    ark_name, ask_name = _name("ARK-Milan-SIMULATED"), _name("SEV-Milan-SIMULATED")
    ca = x509.BasicConstraints(ca=True, path_length=None)
    ark = (_builder(ark_name, ark_name, ark_key.public_key(), 0x10000, now, 25)
           .add_extension(ca, critical=True).sign(ark_key, hashes.SHA384(), rsa_padding=_pss()))
    ask = (_builder(ask_name, ark_name, ask_key.public_key(), 0x10001, now, 25)
           .add_extension(ca, critical=True).sign(ark_key, hashes.SHA384(), rsa_padding=_pss()))
    chip_id = secrets.token_bytes(64)
    exts = [
        (OID_STRUCT_VERSION, der.encode(der.TAG_INTEGER, b"\x00")),
        (OID_PRODUCT_NAME, der.encode(der.TAG_IA5_STRING, SIM_PRODUCT_NAME.encode())),
        (OID_BL_SPL, der.encode(der.TAG_INTEGER, bytes([SIM_TCB["bl"]]))),
        (OID_TEE_SPL, der.encode(der.TAG_INTEGER, bytes([SIM_TCB["tee"]]))),
        (OID_SNP_SPL, der.encode(der.TAG_INTEGER, bytes([SIM_TCB["snp"]]))),
        (OID_UCODE_SPL, der.encode(der.TAG_INTEGER, b"\x00" + bytes([SIM_TCB["ucode"]]))),
        (OID_HWID, chip_id),
    ]
    builder = _builder(_name("SEV-VCEK"), ask_name, vcek_key.public_key(), 1, now, 7)
    for oid, value in exts:
        builder = builder.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value),
                                        critical=False)
    vcek = builder.sign(ask_key, hashes.SHA384(), rsa_padding=_pss())
    return SimChain(ark, ask, vcek, vcek_key, chip_id, measurement, ark_key)


def save_chain(chain: SimChain, state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = serialization.Encoding.PEM
    files = {
        "ark.pem": chain.ark.public_bytes(pem),
        "ask.pem": chain.ask.public_bytes(pem),
        "vcek.pem": chain.vcek.public_bytes(pem),
        # The simulator's "hardware" key. It signs only SIMULATED reports, which no policy
        # accepts unless it pins this chain's root, so storing it is acceptable.
        "vcek-key.pem": chain.vcek_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()),
        "chip_id.hex": chain.chip_id.hex().encode(),
        "measurement.hex": chain.measurement.hex().encode(),
    }
    for name, data in files.items():
        write_atomic(state_dir / name, data, mode=0o600)


def load_chain(state_dir: Path) -> SimChain:
    try:
        ark = load_certificate((state_dir / "ark.pem").read_bytes(), "simulated ARK")
        ask = load_certificate((state_dir / "ask.pem").read_bytes(), "simulated ASK")
        vcek = load_certificate((state_dir / "vcek.pem").read_bytes(), "simulated VCEK")
        key = serialization.load_pem_private_key((state_dir / "vcek-key.pem").read_bytes(), None)
        chip_id = bytes.fromhex((state_dir / "chip_id.hex").read_text().strip())
        measurement = bytes.fromhex((state_dir / "measurement.hex").read_text().strip())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"simulated platform state in {state_dir} is unreadable: {exc}",
                          hint="delete that directory to generate a fresh simulated chain") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{state_dir}/vcek-key.pem is not an EC key")
    return SimChain(ark, ask, vcek, key, chip_id, measurement)


def has_chain(state_dir: Path) -> bool:
    return (state_dir / "ark.pem").is_file()


def load_or_create(state_dir: Path | None = None) -> SimChain:
    """Generated once per state directory, then reused (its root is what policies pin)."""
    state_dir = state_dir or default_state_dir()
    if has_chain(state_dir):
        return load_chain(state_dir)
    chain = generate_chain()
    save_chain(chain, state_dir)
    return chain
