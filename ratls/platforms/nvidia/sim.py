"""A simulated NVIDIA GPU for laptops and CI: a locally generated device chain (with a Hopper FWID
extension) and RIM signing chain, SPDM-format reports and signed RIMs, so the whole verify path
runs unchanged. Its roots are generated keys: evidence from it is accepted only where a policy
allows simulation and pins both roots, and it is SIMULATED everywhere it is shown."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from ... import der
from ...errors import ConfigError
from .types import MeasurementBlock, OpaqueType, RimKind

OID_FWID = "2.23.133.5.4.1"
_SHA384_OID_DER = bytes.fromhex("0609608648016503040202")
DRIVER_VERSION = "570.124.06"
VBIOS_VERSION = "96.00.9f.00.01"
PROJECT, PROJECT_SKU, CHIP_SKU, CHIP = "1010", "0200", "882", "GH100"
BLOCKS = 64
# Which RIM indices each simulated RIM holds as active (NVIDIA splits them between driver and VBIOS).
DRIVER_INDICES = tuple(range(0, 21))
VBIOS_INDICES = tuple(range(21, 33))
_RIMS: dict[tuple[bytes, RimKind, str | None], bytes] = {}
_RIM_IDS: dict[bytes, tuple[str, str]] = {}
_FILES = ("root.pem", "root-key.pem", "leaf.pem", "leaf-key.pem", "rim-root.pem", "rim-root-key.pem", "seed.hex")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ratls SIMULATED"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
        now: dt.datetime, years: int) -> x509.Certificate:
    issuer_name, issuer_key = (issuer[0], issuer[1]) if issuer else (subject, key)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(issuer_key, hashes.SHA384()))


def fwid_extension_value(public_key: ec.EllipticCurvePublicKey, fwid: bytes) -> bytes:
    """Hopper's tcg-dice-FwId layout: SEQUENCE { INTEGER 1, SPKI, SEQUENCE { sha384, OCTET STRING } }."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = der.encode(0x30, _SHA384_OID_DER + der.encode_octet_string(fwid))
    return der.encode(0x30, der.encode(der.TAG_INTEGER, b"\x01") + spki + digest)


@dataclass(frozen=True)
class SimGpu:
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey
    rim_root: x509.Certificate
    rim_root_key: ec.EllipticCurvePrivateKey
    seed: bytes

    @property
    def fwid(self) -> bytes:
        return hashlib.sha384(b"ratls sim GPU firmware" + self.seed).digest()

    @property
    def root_sha256(self) -> str:
        return hashlib.sha256(self.root.public_bytes(serialization.Encoding.DER)).hexdigest()

    @property
    def rim_root_sha256(self) -> str:
        return hashlib.sha256(self.rim_root.public_bytes(serialization.Encoding.DER)).hexdigest()

    def measurement(self, rim_index: int) -> bytes:
        return hashlib.sha384(self.seed + rim_index.to_bytes(2, "big")).digest()

    def endorsements(self) -> dict[str, bytes]:
        """The simulated roots a verifier pins (by fingerprint) before it trusts this GPU."""
        der = serialization.Encoding.DER
        return {"root": self.root.public_bytes(der), "rim-root": self.rim_root.public_bytes(der)}

    def reference_policy(self, count: int = 1) -> tuple[list[str], dict[str, object]]:
        """(simulated roots to pin, the ``nvidia-gpu`` section) accepting exactly this GPU."""
        return [self.root_sha256, self.rim_root_sha256], {
            "required": True, "count": count, "architectures": ["hopper"], "driver_versions": [DRIVER_VERSION],
            "vbios_versions": [VBIOS_VERSION], "require_rim_match": True}

    def chain_pem(self) -> bytes:
        """Leaf first, root last, as NVIDIA's GPUs hand it out."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.leaf, self.root))

    def opaque_fields(self, driver: str = DRIVER_VERSION, vbios: str = VBIOS_VERSION) -> dict[int, bytes]:
        return {
            OpaqueType.DRIVER_VERSION: driver.encode() + b"\x00",
            OpaqueType.VBIOS_VERSION: vbios_bytes(vbios),
            OpaqueType.NVDEC0_STATUS: bytes([0xAA]),
            OpaqueType.CHIP_SKU: CHIP_SKU.encode() + b"\x00",
            OpaqueType.PROJECT: PROJECT.encode() + b"\x00",
            OpaqueType.PROJECT_SKU: PROJECT_SKU.encode() + b"\x00",
            OpaqueType.FWID: self.fwid,
            OpaqueType.OPAQUE_DATA_VERSION: (1).to_bytes(2, "little"),
            OpaqueType.FEATURE_FLAG: (0).to_bytes(2, "little"),
        }

    def report(self, nonce: bytes, *, driver: str = DRIVER_VERSION, vbios: str = VBIOS_VERSION,
               tamper: Mapping[int, bytes] | None = None) -> bytes:
        """An SPDM GET_MEASUREMENTS request || response for *nonce*, signed by the leaf key.
        *tamper*: RIM index -> another value (firmware that is not what its RIM says)."""
        from .abi import encode_report
        blocks = [MeasurementBlock(i + 1, 1, (tamper or {}).get(i, self.measurement(i))) for i in range(BLOCKS)]
        response_nonce = hashlib.sha256(b"response" + nonce + self.seed).digest()
        return encode_report(nonce, blocks, self.opaque_fields(driver, vbios), response_nonce, self._sign)

    def _sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self.leaf_key.sign(data, ec.ECDSA(hashes.SHA384())))
        return r.to_bytes(48, "big") + s.to_bytes(48, "big")

    def rims_by_id(self) -> dict[str, bytes]:
        """This GPU's driver and VBIOS RIMs under the RIM IDs its reports name (upper case)."""
        from .abi import parse_report, rim_ids
        from .types import GpuArch
        if self.seed not in _RIM_IDS:
            _RIM_IDS[self.seed] = rim_ids(parse_report(self.report(bytes(32))), GpuArch.HOPPER)
        driver_id, vbios_id = _RIM_IDS[self.seed]
        return {driver_id.upper(): self.rim(RimKind.DRIVER), vbios_id.upper(): self.rim(RimKind.VBIOS)}

    def rim(self, kind: RimKind, version: str | None = None) -> bytes:
        """A RIM for this GPU's firmware (or, with *version*, one claiming another version), signed
        by a RIM signer under the simulated RIM root; made once per process."""
        key = (self.seed, kind, version)
        if key not in _RIMS:
            _RIMS[key] = self._sign_rim(kind, version)
        return _RIMS[key]

    def _sign_rim(self, kind: RimKind, version: str | None) -> bytes:
        from .sim_rim import generate_rim_signer, sign_rim
        indices = DRIVER_INDICES if kind is RimKind.DRIVER else VBIOS_INDICES
        version = version or (DRIVER_VERSION if kind is RimKind.DRIVER else VBIOS_VERSION.upper())
        measurements = {i: (i in indices, (self.measurement(i),)) for i in range(BLOCKS)}
        # a signer valid as long as the root: simulated RIMs do not expire under a running demo
        key, chain = generate_rim_signer(self.rim_root_key, self.rim_root,
                                         not_before=self.rim_root.not_valid_before_utc, days=365 * 20)
        return sign_rim(version, CHIP, measurements, key, chain)


def _leaf(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey],
          now: dt.datetime, years: int, extensions: tuple[x509.ExtensionType, ...] = ()) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer[0]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365 * years))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(issuer[1], hashes.SHA384())


def vbios_bytes(version: str) -> bytes:
    """The 8 opaque bytes that read back as *version*: the report's text is t = h[8:16] + h[6:8]
    of the reversed bytes' hex h, so h = "000000" + t[8:10] + t[0:8]."""
    t = version.replace(".", "").lower()
    if len(t) != 10:
        raise ValueError(f"VBIOS version {version!r} is not five dotted hex pairs")
    return bytes.fromhex("000000" + t[8:10] + t[0:8])[::-1]


def generate(now: dt.datetime | None = None, seed: bytes | None = None) -> SimGpu:
    import secrets
    now = now or dt.datetime.now(dt.UTC)
    seed = seed or secrets.token_bytes(32)
    root_key, leaf_key, rim_root_key = (ec.generate_private_key(ec.SECP384R1()) for _ in range(3))
    root = _ca("SIMULATED NVIDIA Device Identity CA", root_key, None, now, 25)
    fwid = hashlib.sha384(b"ratls sim GPU firmware" + seed).digest()
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(OID_FWID), fwid_extension_value(leaf_key.public_key(),
                                                                                            fwid))
    leaf = _leaf("SIMULATED GH100 A01 GSP FMC LF", leaf_key, ("SIMULATED NVIDIA Device Identity CA", root_key),
                 now, 25, (ext,))
    rim_root = _ca("SIMULATED CoRIM signing Root CA", rim_root_key, None, now, 25)
    return SimGpu(root, root_key, leaf, leaf_key, rim_root, rim_root_key, seed)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def save(gpu: SimGpu, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = serialization.Encoding.PEM
    files = {"root.pem": gpu.root.public_bytes(pem), "root-key.pem": _key_pem(gpu.root_key),
             "leaf.pem": gpu.leaf.public_bytes(pem), "leaf-key.pem": _key_pem(gpu.leaf_key),
             "rim-root.pem": gpu.rim_root.public_bytes(pem), "rim-root-key.pem": _key_pem(gpu.rim_root_key),
             "seed.hex": gpu.seed.hex().encode()}
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)


def load(directory: Path) -> SimGpu:
    try:
        data = {name: (directory / name).read_bytes() for name in _FILES}
    except OSError as exc:
        raise ConfigError(f"simulated GPU state in {directory} is incomplete: {exc.strerror}",
                          hint="delete the directory to generate a new simulated GPU") from None

    def key(name: str) -> ec.EllipticCurvePrivateKey:
        loaded = serialization.load_pem_private_key(data[name], None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        return loaded

    cert = x509.load_pem_x509_certificate
    return SimGpu(cert(data["root.pem"]), key("root-key.pem"), cert(data["leaf.pem"]), key("leaf-key.pem"),
                  cert(data["rim-root.pem"]), key("rim-root-key.pem"), bytes.fromhex(data["seed.hex"].decode()))


def sim_gpu_dir(sim_state_dir: Path | None) -> Path:
    """The simulated GPU lives beside the simulated CPU chain, in ``<sim state>/nvidia-gpu``."""
    from ..sim.chain import default_state_dir
    return (sim_state_dir or default_state_dir()) / "nvidia-gpu"


def load_or_create(directory: Path) -> SimGpu:
    """Generated once per state directory (``<sim state>/nvidia-gpu``), then reused."""
    if (directory / "seed.hex").exists():
        return load(directory)
    gpu = generate()
    save(gpu, directory)
    return gpu


def presented_roots(devices: Sequence[Any]) -> list[str]:
    """Fingerprints of the simulated roots that simulated GPU records carry (unverified)."""
    from .device import SIM_MEDIA_TYPE
    out: list[str] = []
    for device in devices:
        if device.media_type != SIM_MEDIA_TYPE:
            continue
        for label in ("root", "rim-root"):
            der_bytes = device.endorsements.get(label)
            if der_bytes is not None:
                out.append(hashlib.sha256(der_bytes).hexdigest())
    return list(dict.fromkeys(out))


def roots_to_pin(devices: Sequence[Any], sim_state_dir: Path) -> tuple[list[str], str | None]:
    """For ``policy init``: the simulated GPU roots to trust, compared with the local simulator's
    (as the simulated CPU root is); taken on first use, with a warning, only when there is none."""
    from ...errors import PolicyViolation
    presented = presented_roots(devices)
    if not presented:
        return [], None
    directory = sim_gpu_dir(sim_state_dir)
    if not (directory / "seed.hex").exists():
        return presented, (f"WARNING: simulated GPU roots {', '.join(presented)} taken on first use: there is no "
                           f"local simulated GPU in {directory} to compare them with")
    local = load(directory)
    expected = {local.root_sha256, local.rim_root_sha256}
    if set(presented) != expected:
        raise PolicyViolation(f"the server's simulated GPU roots are not the local simulator's (in {directory}): "
                              "another simulator, or an impostor, made this evidence",
                              hint="point --sim-dir or RATLS_SIM_DIR at the state directory the gateway uses")
    return presented, f"simulated GPU roots match the local simulated GPU in {directory}"
