"""A simulated Intel TDX attestation infrastructure: a local "SGX Root CA", PCK CA and PCK leaf,
a quoting enclave report, TCB signing key, and collateral (TCB info, QE identity, CRLs) signed
like Intel's, so the real TDX verifier (our checks plus dcap-qvl with a custom root) runs on it.

Every name says SIMULATED. A policy accepts it only with ``allow_simulated: true`` and this
root's SHA-256 in ``simulated.root_sha256``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ... import der
from ...errors import ConfigError
from ...fileutil import write_atomic
from ..tdx import abi
from ..tdx.tcb_verdict import CollateralSigners, assemble_quote, ec_point, issue_cert, raw_signature
from ..tdx.verify import SGX_EXTENSION_OID, fingerprint

DEFAULT_MRTD = hashlib.sha384(b"ratls-gateway simulated TDX MRTD v1").digest()
SIM_FMSPC = bytes.fromhex("00906ed50000")
SIM_PCE_ID = b"\x00\x00"
SIM_PCESVN = 13
SIM_CPUSVN = bytes([4, 4, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0])
SIM_TEE_TCB_SVN = bytes([5, 0, 2] + [0] * 13)
SIM_QE_MRSIGNER = hashlib.sha256(b"ratls-gateway simulated TD QE signer").digest()
SIM_QE_ISVSVN = 8
TD_QE_PROD_ID = 2
SIM_QE_ATTRIBUTES = bytes.fromhex("11000000000000000000000000000000")
# SEPT_VE_DISABLE set, debug clear: what a production TD looks like.
SIM_TD_ATTRIBUTES = (abi.TD_ATTR_SEPT_VE_DISABLE).to_bytes(8, "little")
SIM_XFAM = bytes.fromhex("e702060000000000")
COLLATERAL_YEARS = 5


def _name(cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ratls-gateway simulator - NOT Intel"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
    ])


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for value in parts[2:]:
        chunk = [value & 0x7F]
        value >>= 7
        while value:
            chunk.append(0x80 | (value & 0x7F))
            value >>= 7
        body += bytes(reversed(chunk))
    return der.encode(0x06, bytes(body))


def _int(value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return der.encode(der.TAG_INTEGER, raw)


def _seq(*items: bytes) -> bytes:
    return der.encode(0x30, b"".join(items))


def sgx_extension(*, ppid: bytes, cpusvn: bytes, pcesvn: int, pce_id: bytes, fmspc: bytes) -> bytes:
    """The Intel SGX extension of a PCK certificate (SGX PCK Certificate and CRL Profile, §1.5)."""
    base = SGX_EXTENSION_OID
    tcb = [_seq(_oid(f"{base}.2.{i + 1}"), _int(svn)) for i, svn in enumerate(cpusvn)]
    tcb.append(_seq(_oid(f"{base}.2.17"), _int(pcesvn)))
    tcb.append(_seq(_oid(f"{base}.2.18"), der.encode_octet_string(cpusvn)))
    return _seq(
        _seq(_oid(f"{base}.1"), der.encode_octet_string(ppid)),
        _seq(_oid(f"{base}.2"), _seq(*tcb)),
        _seq(_oid(f"{base}.3"), der.encode_octet_string(pce_id)),
        _seq(_oid(f"{base}.4"), der.encode_octet_string(fmspc)),
        _seq(_oid(f"{base}.5"), der.encode(0x0A, b"\x00")),  # SGX type: standard
    )


def _stamp(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _qe_report(attest_key: ec.EllipticCurvePrivateKey, auth_data: bytes) -> bytes:
    report_data = hashlib.sha256(ec_point(attest_key) + auth_data).digest() + bytes(32)
    return b"".join([
        SIM_CPUSVN, struct.pack("<I", 0), bytes(28), SIM_QE_ATTRIBUTES,
        hashlib.sha256(b"ratls-gateway simulated TD QE").digest(), bytes(32), SIM_QE_MRSIGNER, bytes(96),
        struct.pack("<HH", TD_QE_PROD_ID, SIM_QE_ISVSVN), bytes(60), report_data,
    ])


@dataclass
class SimTdxChain:
    root: x509.Certificate
    pck_chain_pem: bytes  # leaf, PCK CA, root
    qe_report: bytes
    qe_report_signature: bytes
    qe_auth_data: bytes
    attest_key: ec.EllipticCurvePrivateKey
    collateral: bytes  # QuoteCollateralV3 JSON
    mrtd: bytes

    @property
    def root_sha256(self) -> str:
        return fingerprint(self.root)

    def body(self, report_data: bytes, **overrides: bytes) -> abi.TdReportBody:
        fields: dict[str, object] = {
            "tee_tcb_svn": SIM_TEE_TCB_SVN, "mr_seam": hashlib.sha384(b"simulated TDX module").digest(),
            "mr_signer_seam": bytes(48), "seam_attributes": bytes(8), "td_attributes": SIM_TD_ATTRIBUTES,
            "xfam": SIM_XFAM, "mr_td": self.mrtd, "mr_config_id": bytes(48), "mr_owner": bytes(48),
            "mr_owner_config": bytes(48),
            "rtmr": tuple(hashlib.sha384(f"simulated RTMR{i}".encode()).digest() for i in range(4)),
            "report_data": report_data,
        }
        fields.update(overrides)
        return abi.TdReportBody(**fields)  # type: ignore[arg-type]

    def sign_quote(self, body: abi.TdReportBody) -> bytes:
        """A v4 quote, laid out and signed the way the TDX quoting enclave does."""
        header = struct.pack("<HHIHH", 4, abi.ATT_KEY_ECDSA_P256, abi.TEE_TYPE_TDX, 0, 0)
        header += abi.INTEL_QE_VENDOR_ID + bytes(20)
        return assemble_quote(header + abi.td_report_body_bytes(body), self.attest_key, self.qe_report,
                              self.qe_report_signature, self.qe_auth_data, self.pck_chain_pem)


def _ca(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey,
        now: dt.datetime, *, ca: bool, extra: tuple[x509.ExtensionType, ...] = ()) -> x509.Certificate:
    return issue_cert(_name(subject), issuer, key, signer, now - dt.timedelta(days=1),
                      now + dt.timedelta(days=365 * 10), ca=ca, extra=extra)




def _tcb_info(now: dt.datetime, until: dt.datetime) -> dict[str, object]:
    svn_list = [{"svn": s} for s in SIM_CPUSVN]
    tdx_list = [{"svn": s} for s in SIM_TEE_TCB_SVN]
    return {
        "id": "TDX", "version": 3, "issueDate": _stamp(now - dt.timedelta(days=1)), "nextUpdate": _stamp(until),
        "fmspc": SIM_FMSPC.hex().upper(), "pceId": SIM_PCE_ID.hex().upper(), "tcbType": 0,
        "tcbEvaluationDataNumber": 17,
        "tdxModule": {"mrsigner": "00" * 48, "attributes": "00" * 8, "attributesMask": "FF" * 8},
        "tdxModuleIdentities": [],
        "tcbLevels": [{"tcb": {"sgxtcbcomponents": svn_list, "pcesvn": SIM_PCESVN, "tdxtcbcomponents": tdx_list},
                       "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "UpToDate"}],
    }


def _qe_identity(now: dt.datetime, until: dt.datetime) -> dict[str, object]:
    return {
        "id": "TD_QE", "version": 2, "issueDate": _stamp(now - dt.timedelta(days=1)), "nextUpdate": _stamp(until),
        "tcbEvaluationDataNumber": 17, "miscselect": "00000000", "miscselectMask": "FFFFFFFF",
        "attributes": SIM_QE_ATTRIBUTES.hex().upper(), "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": SIM_QE_MRSIGNER.hex().upper(), "isvprodid": TD_QE_PROD_ID,
        "tcbLevels": [{"tcb": {"isvsvn": SIM_QE_ISVSVN}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "UpToDate"}],
    }


def _compact(doc: dict[str, object]) -> str:
    return json.dumps(doc, separators=(",", ":"))


def generate_tdx_chain(now: dt.datetime | None = None, *, mrtd: bytes = DEFAULT_MRTD) -> SimTdxChain:
    now = now or dt.datetime.now(dt.UTC)
    until = now + dt.timedelta(days=365 * COLLATERAL_YEARS)
    root_key, ca_key, leaf_key, tcb_key, attest_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(5))
    root_name = _name("Intel SGX Root CA (SIMULATED)")
    root = _ca("Intel SGX Root CA (SIMULATED)", root_name, root_key, root_key, now, ca=True)
    pck_ca = _ca("Intel SGX PCK Platform CA (SIMULATED)", root.subject, ca_key, root_key, now, ca=True)
    tcb_signer = _ca("Intel SGX TCB Signing (SIMULATED)", root.subject, tcb_key, root_key, now, ca=False)
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), sgx_extension(
        ppid=secrets.token_bytes(16), cpusvn=SIM_CPUSVN, pcesvn=SIM_PCESVN, pce_id=SIM_PCE_ID, fmspc=SIM_FMSPC))
    leaf = _ca("Intel SGX PCK Certificate (SIMULATED)", pck_ca.subject, leaf_key, ca_key, now, ca=False,
               extra=(ext,))
    pem = serialization.Encoding.PEM
    auth_data = bytes(range(32))
    qe_report = _qe_report(attest_key, auth_data)
    tcb_info, qe_identity = _compact(_tcb_info(now, until)), _compact(_qe_identity(now, until))
    signers = CollateralSigners(root, root_key, pck_ca, ca_key, tcb_signer, tcb_key)
    collateral = signers.collateral(tcb_info, qe_identity, now - dt.timedelta(days=1), until)
    return SimTdxChain(
        root=root, pck_chain_pem=b"".join(c.public_bytes(pem) for c in (leaf, pck_ca, root)),
        qe_report=qe_report, qe_report_signature=raw_signature(leaf_key, qe_report), qe_auth_data=auth_data,
        attest_key=attest_key, collateral=json.dumps(collateral).encode(), mrtd=mrtd)


_FILES = ("root.pem", "pck-chain.pem", "qe-report.bin", "qe-report.sig", "qe-auth.bin", "attest-key.pem",
          "collateral.json", "mrtd.hex")


def save_tdx_chain(chain: SimTdxChain, state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = serialization.Encoding.PEM
    # The simulated attestation key signs only SIMULATED quotes, which no policy accepts unless
    # it pins this root, so keeping it on disk is acceptable. The CA keys are not kept at all.
    data = [chain.root.public_bytes(pem), chain.pck_chain_pem, chain.qe_report, chain.qe_report_signature,
            chain.qe_auth_data,
            chain.attest_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            chain.collateral, chain.mrtd.hex().encode()]
    for name, blob in zip(_FILES, data, strict=True):
        write_atomic(state_dir / name, blob, mode=0o600)


def load_tdx_chain(state_dir: Path) -> SimTdxChain:
    try:
        blobs = {name: (state_dir / name).read_bytes() for name in _FILES}
        key = serialization.load_pem_private_key(blobs["attest-key.pem"], None)
        root = x509.load_pem_x509_certificate(blobs["root.pem"])
        mrtd = bytes.fromhex(blobs["mrtd.hex"].decode().strip())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"simulated TDX state in {state_dir} is unreadable: {exc}",
                          hint="delete that directory to generate a fresh simulated TDX chain") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{state_dir}/attest-key.pem is not an EC key")
    return SimTdxChain(root=root, pck_chain_pem=blobs["pck-chain.pem"], qe_report=blobs["qe-report.bin"],
                       qe_report_signature=blobs["qe-report.sig"], qe_auth_data=blobs["qe-auth.bin"],
                       attest_key=key, collateral=blobs["collateral.json"], mrtd=mrtd)


def tdx_state_dir(sim_state_dir: Path) -> Path:
    """Where the TDX simulator keeps its chain inside a simulator state directory."""
    return sim_state_dir / "tdx"


def has_tdx_chain(state_dir: Path) -> bool:
    return (state_dir / "root.pem").is_file()


def load_or_create_tdx(state_dir: Path) -> SimTdxChain:
    if has_tdx_chain(state_dir):
        return load_tdx_chain(state_dir)
    chain = generate_tdx_chain()
    save_tdx_chain(chain, state_dir)
    return chain
