"""`make demo`: the whole product on the embedded default, end to end.

Starts the gateway (which starts the bundled Triton with the demo models and Envoy) on the
simulated platform with one simulated NVIDIA GPU, then acts as a client: writes a policy pinning
the simulated roots, the launch measurement, the GPU's driver and VBIOS, the model digests
measured from the repository and the gateway's config digest; verifies the served certificate;
runs inferences over HTTP and gRPC with tritonclient trusting only that certificate, and one
with curl pinned to its key; shows that a policy expecting other models, or another VBIOS, is
refused before any request. Stops everything it started and exits non-zero if anything did not
go as expected.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ratls import registry
from ratls.client.verify import VerifiedServer, verify_server
from ratls.errors import PolicyViolation
from ratls.registry import PlatformSettings
from triton_backend.demo import demo_repository
from triton_backend.manifest import build_manifest


def _free_port() -> int:
    from triton_backend.launch import free_port

    return free_port()


def _step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


class Demo:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = _free_port()
        self.metrics_port = _free_port()
        self.sim_dir = Path(os.environ.get("RATLS_SIM_DIR", Path(".demo") / "sim")).resolve()
        self.proc: subprocess.Popen[bytes] | None = None
        self.failures = 0
        # a simulated platform: the first registered (SNP-format reports) unless RATLS_DEMO_PLATFORM says
        simulators = [t.name for t in registry.types() if t.simulated]
        self.platform = os.environ.get("RATLS_DEMO_PLATFORM", simulators[0])
        if self.platform not in simulators:
            raise SystemExit(f"RATLS_DEMO_PLATFORM must be one of {', '.join(simulators)}, not {self.platform!r}")

    def check(self, ok: bool, what: str) -> None:
        print(("  ok   " if ok else "  FAIL ") + what, flush=True)
        self.failures += not ok

    def start_gateway(self) -> None:
        config = {
            "version": 1,
            "listen": {"address": "127.0.0.1", "port": self.port},
            "identity": {"platform": self.platform, "sim_state_dir": str(self.sim_dir)},
            "gpus": {"mode": "sim", "count": 1},  # a simulated NVIDIA GPU attested beside the simulated CPU
            "control": {"run_dir": str(self.work / "run"), "metrics_port": self.metrics_port},
        }
        path = self.work / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        log = open(self.work / "gateway.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "ratls.cli", "serve", "-c", str(path)], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("gateway exited:\n" + (self.work / "gateway.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("gateway not ready in time:\n" + (self.work / "gateway.log").read_text()[-3000:])

    def stop_gateway(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def write_policy(self, models: dict[str, str], config_digest: str, *, vbios: str | None = None) -> Path:
        from ratls.platforms.nvidia.sim import load_or_create, sim_gpu_dir

        doc: dict[str, Any] = {"version": 1, "platforms": [], "allow_simulated": True}
        reference = registry.lookup(self.platform).reference_policy(PlatformSettings(sim_state_dir=self.sim_dir))
        doc.update(reference or {})
        gpu_roots, gpu_section = load_or_create(sim_gpu_dir(self.sim_dir)).reference_policy()
        doc["simulated"] = {"root_sha256": [doc["simulated"]["root_sha256"], *gpu_roots]}
        doc["nvidia-gpu"] = {**gpu_section, **({"vbios_versions": [vbios]} if vbios else {})}
        doc["claims"] = {"models": models, "config": config_digest, "max_age": "1h"}
        path = self.work / "policy.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def run(self) -> int:
        _step(f"start the gateway on the SIMULATED platform ({self.platform}), port {self.port} "
              "(Triton + Envoy + control plane)")
        self.start_gateway()
        status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/admin/status").read())
        print(f"  envoy pid {status['envoy']['pid']}, triton pid {status['triton']['pid']}, "
              f"config {status['config_digest']}")

        _step("client: write a policy from what we expect (sim root, launch digest, model digests, config)")
        manifest = build_manifest(demo_repository())
        policy = self.write_policy(manifest.model_digests(), status["config_digest"])
        print(f"  {policy}")

        _step("client: verify the served certificate BEFORE sending any request")
        url = f"https://127.0.0.1:{self.port}"
        server = verify_server(url, policy)
        print("\n".join("  " + line for line in server.appraisal.summary().splitlines()))
        self.check(server.appraisal.ok, "certificate verified against the policy")
        pem = self.work / "verified.pem"
        pem.write_text(server.cert_pem)

        self.http_inference(server)
        self.grpc_inference(server, pem)
        self.curl_inference(server, url)
        self.wrong_models_refused(url, status["config_digest"])
        self.wrong_vbios_refused(url, manifest.model_digests(), status["config_digest"])
        print("\ndemo: " + ("everything worked as expected" if not self.failures else
                            f"{self.failures} step(s) FAILED"), flush=True)
        return 1 if self.failures else 0

    def http_inference(self, server: VerifiedServer) -> None:
        _step("HTTP inference with tritonclient trusting only the verified certificate")
        import ssl

        import tritonclient.http as thttp

        ctx = ssl.create_default_context(cadata=server.cert_pem)
        ctx.check_hostname = False  # the pinned certificate itself is the trust anchor
        http = thttp.InferenceServerClient(f"127.0.0.1:{self.port}", ssl=True, ssl_context_factory=lambda: ctx)
        a = thttp.InferInput("INPUT0", [3], "FP32")
        a.set_data_from_numpy(np.array([1, 2, 3], dtype=np.float32))
        b = thttp.InferInput("INPUT1", [3], "FP32")
        b.set_data_from_numpy(np.array([10, 20, 30], dtype=np.float32))
        out = http.infer("add_sub", [a, b])
        print(f"  add_sub: OUTPUT0={out.as_numpy('OUTPUT0').tolist()} OUTPUT1={out.as_numpy('OUTPUT1').tolist()}")
        self.check(out.as_numpy("OUTPUT0").tolist() == [11.0, 22.0, 33.0], "HTTP/1.1 inference")

    def grpc_inference(self, server: VerifiedServer, pem: Path) -> None:
        _step("gRPC inference with tritonclient (root_certificates = the verified certificate)")
        import tritonclient.grpc as tgrpc

        grpc = tgrpc.InferenceServerClient(f"127.0.0.1:{self.port}", ssl=True, root_certificates=str(pem),
                                           channel_args=[("grpc.ssl_target_name_override", server.names[0])])
        text = tgrpc.InferInput("TEXT", [2], "BYTES")
        text.set_data_from_numpy(np.array([b"confidential", b"inference"], dtype=np.object_))
        out = grpc.infer("text_transform", [text])
        print(f"  text_transform: UPPER={out.as_numpy('UPPER').tolist()}")
        self.check(out.as_numpy("UPPER").tolist() == [b"CONFIDENTIAL", b"INFERENCE"], "gRPC inference")

    def curl_inference(self, server: VerifiedServer, url: str) -> None:
        _step(f"curl -k --pinnedpubkey {server.curl_pin}")
        curl = shutil.which("curl")
        if curl is None:
            self.check(False, "curl is not installed (apt-get install curl)")
            return
        body = json.dumps({"inputs": [
            {"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [5]},
            {"name": "INPUT1", "shape": [1], "datatype": "FP32", "data": [3]}]})
        result = subprocess.run([curl, "-sS", "-k", "--pinnedpubkey", server.curl_pin, "-H",
                                 "Content-Type: application/json", "-d", body,
                                 f"{url}/v2/models/add_sub/infer"], capture_output=True, text=True, timeout=30)
        print("  " + (result.stdout or result.stderr).strip())
        self.check(result.returncode == 0 and '"data":[8.0]' in result.stdout, "curl pinned inference")

    def wrong_models_refused(self, url: str, config_digest: str) -> None:
        _step("a policy pinning other model digests is refused before any request is sent")
        self._refused(url, self.write_policy({"add_sub": "sha256:" + "0" * 64}, config_digest),
                      "wrong model digest refused")

    def wrong_vbios_refused(self, url: str, models: dict[str, str], config_digest: str) -> None:
        _step("a policy pinning another GPU VBIOS is refused before any request is sent")
        self._refused(url, self.write_policy(models, config_digest, vbios="96.00.74.00.20"), "other VBIOS refused")

    def _refused(self, url: str, policy: Path, what: str) -> None:
        try:
            verify_server(url, policy)
            self.check(False, what)
        except PolicyViolation as exc:
            print(f"  refused: {exc}")
            self.check(True, what)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ratls-demo-") as tmp:
        demo = Demo(Path(tmp))
        try:
            return demo.run()
        except Exception as exc:  # noqa: BLE001 - the demo reports any failure and exits non-zero
            print(f"\ndemo FAILED: {exc}", file=sys.stderr)
            return 1
        finally:
            demo.stop_gateway()


if __name__ == "__main__":
    sys.exit(main())
