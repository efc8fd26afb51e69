"""Plays TensorRT-LLM's tensorrtllm backend in tests, on machines without a GPU.

The gpu profile's ``llm`` ensemble (preprocessing -> TensorRT-LLM -> postprocessing) cannot
load here: the tensorrtllm backend needs a GPU. The tests swap this Python model in for
``llm_tensorrt_llm``, keeping its config (inputs, outputs, decoupled policy, batching), so
that the real ensemble, the real pre/postprocessing models and the orchestrator's client are
exercised on a real tritonserver. It follows the backend's streaming contract for what June
sends: greedy decoding (top-k 1) of ``input_ids`` for up to ``request_output_len`` tokens,
one response per new token (``exclude_input_in_output``), no token for ``end_id``, the final
flag on the last response; ``num_input_tokens`` / ``num_output_tokens`` with each. The
tokens come from ONNX Runtime GenAI running the same checkpoint, with the
``repetition_penalty`` sent. Other sampling parameters and stop words are accepted and
ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime_genai as og
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        folder = Path(args["model_repository"]) / str(args["model_version"]) / "standin"
        self.model = og.Model(str(folder))

    def execute(self, requests: list) -> None:
        for request in requests:
            sender = request.get_response_sender()

            def value(name: str, request: object = request) -> np.ndarray:
                return pb_utils.get_input_tensor_by_name(request, name).as_numpy()

            length = int(value("input_lengths").reshape(-1)[0])
            ids = value("input_ids").reshape(-1)[:length].astype(np.int32)
            budget = int(value("request_output_len").reshape(-1)[0])
            end_id = int(value("end_id").reshape(-1)[0])
            params = og.GeneratorParams(self.model)
            penalty = pb_utils.get_input_tensor_by_name(request, "repetition_penalty")
            params.set_search_options(
                max_length=length + budget,
                do_sample=False,
                repetition_penalty=1.0 if penalty is None else float(penalty.as_numpy().flat[0]),
            )
            generator = og.Generator(self.model, params)
            generator.append_tokens(ids)
            made = 0
            while made < budget and not generator.is_done():
                generator.generate_next_token()
                token = int(generator.get_next_tokens()[0])
                if token == end_id:
                    break
                made += 1
                out = [
                    pb_utils.Tensor("output_ids", np.array([[[token]]], dtype=np.int32)),
                    pb_utils.Tensor("num_input_tokens", np.array([[length]], dtype=np.int32)),
                    pb_utils.Tensor("num_output_tokens", np.array([[made]], dtype=np.int32)),
                ]
                sender.send(
                    pb_utils.InferenceResponse(output_tensors=out),
                    flags=FINAL if made == budget else 0,
                )
            if made < budget:
                sender.send(flags=FINAL)
