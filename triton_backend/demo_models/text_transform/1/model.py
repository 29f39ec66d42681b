"""Upper-cases UTF-8 strings (BYTES tensors) and reports their byte lengths."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            raw = [t if isinstance(t, bytes) else str(t).encode() for t in texts.reshape(-1)]
            upper = np.array([r.decode("utf-8", "replace").upper().encode() for r in raw], dtype=np.object_)
            lengths = np.array([len(r) for r in raw], dtype=np.int64)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("UPPER", upper.reshape(texts.shape)),
                pb_utils.Tensor("LENGTH", lengths.reshape(texts.shape)),
            ]))
        return responses
