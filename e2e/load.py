"""A bounded load generator for e2e tests: HTTP/1.1 keep-alive, new connections and gRPC,
counting every success and failure. Loops are bounded by time and stop by themselves."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import ssl
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

BODY = json.dumps({"inputs": [
    {"name": "INPUT0", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]},
    {"name": "INPUT1", "shape": [4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}).encode()


def fetch_pem(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with unverified().wrap_socket(sock) as tls:
            return ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True))


def unverified() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    errors: Counter = field(default_factory=Counter)
    certs_seen: set[str] = field(default_factory=set)
    failure_times: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def success(self) -> None:
        with self.lock:
            self.ok += 1

    def failure(self, exc: BaseException) -> None:
        with self.lock:
            self.failed += 1
            self.errors[type(exc).__name__ + ": " + str(exc)[:80]] += 1
            self.failure_times.append(time.monotonic())


def _http_worker(port: int, deadline: float, result: LoadResult, reconnect_every: int) -> None:
    ctx = unverified()
    conn: http.client.HTTPSConnection | None = None
    n = 0
    while time.monotonic() < deadline:
        try:
            if conn is None or (reconnect_every and n % reconnect_every == 0):
                if conn is not None:
                    conn.close()
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
                conn.connect()
                der = conn.sock.getpeercert(binary_form=True)
                with result.lock:
                    result.certs_seen.add(hashlib.sha256(der).hexdigest())
            conn.request("POST", "/v2/models/add_sub/infer", body=BODY,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200 or b"OUTPUT0" not in body:
                raise RuntimeError(f"HTTP {resp.status}")
            result.success()
        except Exception as exc:  # noqa: BLE001 - every failure is counted
            result.failure(exc)
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.05)
        n += 1
    if conn is not None:
        conn.close()


def _grpc_worker(port: int, deadline: float, result: LoadResult) -> None:
    import tritonclient.grpc as tgrpc

    client = None
    while time.monotonic() < deadline:
        try:
            if client is None:
                # Trust the certificate served right now (client-side appraisal is tested elsewhere);
                # the HTTP/2 connection then lives across rotations.
                pem = tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False)  # noqa: SIM115
                pem.write(fetch_pem(port))
                pem.close()
                client = tgrpc.InferenceServerClient(f"127.0.0.1:{port}", ssl=True, root_certificates=pem.name,
                                                     channel_args=[("grpc.ssl_target_name_override", "localhost")])
                os.unlink(pem.name)
            a = tgrpc.InferInput("INPUT0", [2], "FP32")
            a.set_data_from_numpy(np.array([1, 2], dtype=np.float32))
            b = tgrpc.InferInput("INPUT1", [2], "FP32")
            b.set_data_from_numpy(np.array([1, 1], dtype=np.float32))
            out = client.infer("add_sub", [a, b], client_timeout=10)
            if out.as_numpy("OUTPUT0").tolist() != [2.0, 3.0]:
                raise RuntimeError("wrong result")
            result.success()
        except Exception as exc:  # noqa: BLE001
            result.failure(exc)
            time.sleep(0.05)


def run_load(port: int, seconds: float, *, http_workers: int = 3, reconnect_every: int = 20,
             grpc_workers: int = 0) -> tuple[LoadResult, list[threading.Thread]]:
    result = LoadResult()
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=_http_worker, args=(port, deadline, result, reconnect_every), daemon=True)
               for _ in range(http_workers)]
    threads += [threading.Thread(target=_grpc_worker, args=(port, deadline, result), daemon=True)
                for _ in range(grpc_workers)]
    for t in threads:
        t.start()
    return result, threads
