"""Triton glue for the decoupled ``llm`` model; the logic is in llm_engine.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import triton_python_backend_utils as pb_utils
from chat import read_chat_request
from june_backend import error_of, get_logger, int_parameter, parse_model_config, run_nicer
from llm_engine import ContinuousBatcher, Job

log = get_logger("llm")
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


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
            pb_utils.Tensor(
                "CACHED_TOKENS", np.array([info.get("cached_tokens", 0)], dtype=np.int32)
            ),
        ]
    )


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = parse_model_config(args["model_config"])
        folder = Path(args["model_repository"]) / str(args["model_version"])
        # On a busy CPU the LLM yields to speech recognition and synthesis (and to the
        # orchestrator, which encodes and sends the audio): a voice turn's first audio
        # byte came 0.2-0.3 s sooner on 2 cores (june bench voice-turn), its last byte
        # no later.
        nice = run_nicer(int_parameter(config, "nice", 0))
        self.batcher = ContinuousBatcher(
            folder,
            intra_op_threads=int_parameter(config, "intra_op_threads", 0),
            warm_system_prompt=int_parameter(config, "warm_system_prompt", 0) > 0,
        )
        log.info(
            "LLM ready (batch capacity %d, context %d, %d threads at nice %d, system prompt "
            "pre-filled while idle: %s, defaults %s)",
            self.batcher.capacity,
            self.batcher.context_length,
            self.batcher.threads,
            nice,
            self.batcher.warm_system_prompt,
            self.batcher.defaults,
        )

    def execute(self, requests: list) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                chat = read_chat_request(pb_utils, request)
                if chat.seed is not None and not self.batcher.supports_seed:
                    raise ValueError(
                        "SEED is not supported here: ONNX Runtime GenAI seeds requests only in its "
                        "dynamic-batching (CUDA paged-attention) engine"
                    )
                sampling = chat.sampling(self.batcher.defaults)

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

                prompt_ids, shared = self.batcher.encode_chat(
                    chat.messages, enable_thinking=chat.enable_thinking
                )
                self.batcher.submit(
                    Job(
                        prompt_ids=prompt_ids,
                        shared=shared,
                        max_tokens=chat.max_tokens,
                        sampling=sampling,
                        seed=chat.seed,
                        stop=chat.stop,
                        emit=emit,
                        is_cancelled=request.is_cancelled,
                    )
                )
            except Exception as exc:  # a bad request never stops the engine
                sender.send(
                    pb_utils.InferenceResponse(error=error_of(pb_utils, exc, prefix="llm")),
                    flags=FINAL,
                )
        return None

    def finalize(self) -> None:
        self.batcher.close()
