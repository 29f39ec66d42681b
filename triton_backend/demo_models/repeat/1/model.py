"""Decoupled model: streams COUNT responses for one request, then the final flag."""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

MAX_COUNT = 1000


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            count = int(pb_utils.get_input_tensor_by_name(request, "COUNT").as_numpy().reshape(-1)[0])
            message = pb_utils.get_input_tensor_by_name(request, "MESSAGE").as_numpy().reshape(-1)[0]
            if not 0 <= count <= MAX_COUNT:
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"COUNT must be 0..{MAX_COUNT}")),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            for i in range(count):
                sender.send(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("INDEX", np.array([i], dtype=np.int32)),
                    pb_utils.Tensor("MESSAGE", np.array([message], dtype=np.object_)),
                ]))
                time.sleep(0.01)  # a visible gap between chunks, so buffering would show
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
