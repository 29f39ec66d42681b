"""Call Triton through ratls-gateway with the ordinary tritonclient SDK, verified first.

    python examples/infer.py https://127.0.0.1:8443 policy.yaml

The certificate is checked against the policy before any request byte is sent; the clients then
trust exactly that certificate (and re-verify on a rotation). A policy failure raises
PolicyViolation and nothing is sent.
"""

import sys

import numpy as np
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from ratls.client.triton import grpc_client, http_client


def add_sub_inputs(module, a, b):  # INPUT0/INPUT1 of the demo add_sub model
    x, y = module.InferInput("INPUT0", [len(a)], "FP32"), module.InferInput("INPUT1", [len(b)], "FP32")
    x.set_data_from_numpy(np.array(a, dtype=np.float32))
    y.set_data_from_numpy(np.array(b, dtype=np.float32))
    return [x, y]


def main(url: str, policy: str) -> None:
    http = http_client(url, policy=policy)  # a tritonclient.http.InferenceServerClient, verified
    result = http.infer("add_sub", add_sub_inputs(thttp, [5, 1], [3, 1]))
    print("HTTP add_sub:", result.as_numpy("OUTPUT0").tolist(), result.as_numpy("OUTPUT1").tolist())

    grpc = grpc_client(url, policy=policy)  # a tritonclient.grpc.InferenceServerClient, verified
    result = grpc.infer("add_sub", add_sub_inputs(tgrpc, [5, 1], [3, 1]))
    print("gRPC add_sub:", result.as_numpy("OUTPUT0").tolist(), result.as_numpy("OUTPUT1").tolist())
    print("verified certificate sha256:", http.server.cert_sha256)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python examples/infer.py https://HOST:PORT policy.yaml")
    main(sys.argv[1], sys.argv[2])
