"""Helpers shared by the RIM tests: vector paths, times, a simulated RIM signer, XML edits."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

T_2024 = datetime(2024, 6, 1, tzinfo=UTC)
T_2025 = datetime(2025, 10, 1, tzinfo=UTC)
T_NOW = datetime(2026, 12, 1, tzinfo=UTC)  # "@now" of EXPECTED_RESULTS.txt

LOCAL_RIMS = "nv-local-gpu-verifier-2.7.3/rims"
SDK_RIMS = "nvidia-attestation-sdk/rims"
DRIVER_TEST = f"{LOCAL_RIMS}/Driver_RIM_test_no_gpu.swidtag"
VBIOS_TEST = f"{LOCAL_RIMS}/1010_0200_882_96005E0001_test_no_gpu.swidtag"
VBIOS_PROD = f"{LOCAL_RIMS}/1010_0200_882_96005E0001_PROD.swidtag"

SDK_RIM_FILES = [
    "NV_GPU_DRIVER_GH100_535.86.09_measurement_mismatch.xml", "NV_GPU_DRIVER_GH100_550.144.03.xml",
    "NV_GPU_DRIVER_GH100_570.124.03_expired.xml", "NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml",
    "incorrect_cert_chain_driver_rim.xml", "incorrect_signature_driver_rim.xml",
]
SWIDTAGS = [
    "1010_0200_882_96005E0001_PROD", "1010_0200_882_96005E0001_test_no_gpu", "1010_0200_882_96005E0003_PROD",
    "1010_0200_882_960074001A_PROD", "1010_0200_882_960074001C_PROD", "1010_0205_862_96005E0002_PROD",
    "1010_0205_862_96005E0004_PROD", "1010_0205_862_960074001F_PROD", "1010_0205_862_9600740020_PROD",
    "1010_0210_886_9600740011_PROD", "1010_0215_866_9600740010_PROD", "Driver_RIM_test_no_gpu",
    "g520_0200_885_9600740001_PROD", "g520_0200_885_960074000D_PROD", "g520_0202_885_96006D0008_PROD",
    "g520_0202_885_96006D0027_PROD", "g520_0202_885_9600740014_PROD", "g520_0202_885_9600740018_PROD",
    "g520_0205_865_9600740006_PROD", "g520_0205_865_960074000F_PROD", "g520_0207_865_9600740015_PROD",
    "g520_0207_865_9600740019_PROD", "g520_0213_881_96006D0007_PROD", "g520_0213_881_96006D0026_PROD",
    "g520_0228_889_96006D000A_PROD", "g520_0228_889_96006D0029_PROD",
]


@dataclass(frozen=True)
class SimSigner:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...]

    def sign(self, measurements: Mapping[int, tuple[bool, tuple[bytes, ...]]], version: str = "550.90.07",
             product: str = "GH100") -> bytes:
        from ratls.platforms.nvidia.sim_rim import sign_rim

        return sign_rim(version, product, measurements, self.key, self.chain)


@cache
def sim_signer() -> SimSigner:
    """One simulated RIM PKI per test session (key generation is the slow part)."""
    from ratls.platforms.nvidia.sim_rim import generate_rim_root, generate_rim_signer

    start = datetime(2026, 1, 1, tzinfo=UTC)
    root_key, root = generate_rim_root(not_before=start)
    key, chain = generate_rim_signer(root_key, root, not_before=start)
    return SimSigner(root_key, root, key, chain)


def digest(n: int) -> bytes:
    return bytes([n]) * 48


def replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) >= 1, old
    return data.replace(old, new, 1)


@contextmanager
def tripwire_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records every request: proof that parsing fetched nothing."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'<!ENTITY x "fetched">')

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
