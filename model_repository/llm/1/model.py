"""Triton glue for the decoupled ``llm`` model; the logic is in llm_engine.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import triton_python_backend_utils as pb_utils
from chat import check_sampling, parse_messages
from june_backend import decode_texts, get_logger, int_parameter, parse_model_config
from llm_engine import ContinuousBatcher, Job

log = get_logger("llm")
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _scalar(request: object, name: str, default: float | int | None) -> float | int | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    return tensor.as_numpy().reshape(-1)[0].item()


def _response(text: str, ids: list[int], final: dict | None) -> object:
    info = final or {}
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("TEXT", np.array([text.encode()], dtype=np.object_)),
            pb_utils.Tensor("TOKEN_IDS", np.array(ids, dtype=np.int32)),
            pb_utils.Tensor(
                "FINISH_REASON",
                np.array([info.get("finish_reason", "").encode()], dtype=np.object_),
            ),
            pb_utils.Tensor(
                "PROMPT_TOKENS", np.array([info.get("prompt_tokens", 0)], dtype=np.int32)
            ),
            pb_utils.Tensor(
                "COMPLETION_TOKENS", np.array([info.get("completion_tokens", 0)], dtype=np.int32)
            ),
        ]
    )


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = parse_model_config(args["model_config"])
        folder = Path(args["model_repository"]) / str(args["model_version"])
        self.batcher = ContinuousBatcher(
            folder, intra_op_threads=int_parameter(config, "intra_op_threads", 0)
        )
        log.info(
            "LLM ready (batch capacity %d, context %d, %d threads)",
            self.batcher.capacity,
            self.batcher.context_length,
            self.batcher.threads,
        )

    def execute(self, requests: list) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                messages = parse_messages(
                    decode_texts(pb_utils.get_input_tensor_by_name(request, "MESSAGES").as_numpy())[
                        0
                    ]
                )
                stop_tensor = pb_utils.get_input_tensor_by_name(request, "STOP")
                stop = (
                    [s for s in decode_texts(stop_tensor.as_numpy()) if s]
                    if stop_tensor is not None
                    else []
                )
                max_tokens = int(_scalar(request, "MAX_TOKENS", 256))
                temperature = float(_scalar(request, "TEMPERATURE", 0.0))
                top_p = float(_scalar(request, "TOP_P", 1.0))
                seed = _scalar(request, "SEED", None)
                if seed is not None and not self.batcher.supports_seed:
                    raise ValueError(
                        "SEED is not supported here: ONNX Runtime GenAI seeds requests only in its "
                        "dynamic-batching (CUDA paged-attention) engine"
                    )
                check_sampling(max_tokens, temperature, top_p)

                def emit(
                    delta: str, ids: list[int], final: dict | None, sender: object = sender
                ) -> None:
                    if final is not None and final.get("finish_reason") == "cancelled":
                        sender.send(flags=FINAL)
                        return
                    if final is not None and final.get("error"):
                        sender.send(
                            pb_utils.InferenceResponse(error=pb_utils.TritonError(final["error"])),
                            flags=FINAL,
                        )
                        return
                    sender.send(
                        _response(delta, ids, final), flags=FINAL if final is not None else 0
                    )

                self.batcher.submit(
                    Job(
                        prompt_ids=self.batcher.encode_chat(messages),
                        max_tokens=max_tokens,
                        temperature=temperature,
                        top_p=top_p,
                        seed=None if seed is None else int(seed),
                        stop=stop,
                        emit=emit,
                        is_cancelled=request.is_cancelled,
                    )
                )
            except Exception as exc:  # a bad request never stops the engine
                sender.send(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"llm: {exc}")),
                    flags=FINAL,
                )
        return None

    def finalize(self) -> None:
        self.batcher.close()
