"""Triton glue for ``llm_preprocessing``; the logic is in prompt.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton_python_backend_utils as pb_utils
from chat import parse_messages
from june_backend import answer_each, decode_texts, get_logger, parse_model_config, scalar_or
from prompt import ChatPreprocessor

log = get_logger("llm_preprocessing")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        parse_model_config(args["model_config"])
        folder = Path(args["model_repository"]) / str(args["model_version"])
        self.prep = ChatPreprocessor(folder)
        log.info("chat preprocessing ready (end tokens %s)", self.prep.eos_ids)

    def execute(self, requests: list) -> list:
        # "llm: " is the prefix the orchestrator reads as the client's mistake (a 4xx).
        return answer_each(pb_utils, requests, self.prepare, prefix="llm", log=log)

    def prepare(self, request: object) -> list:
        def tensor(name: str) -> object:
            return pb_utils.get_input_tensor_by_name(request, name)

        messages = parse_messages(decode_texts(tensor("MESSAGES").as_numpy())[0])
        stop = tensor("STOP")
        seed = tensor("SEED")
        inputs = self.prep.inputs(
            messages,
            max_tokens=int(scalar_or(tensor("MAX_TOKENS"), 256)),
            temperature=scalar_or(tensor("TEMPERATURE"), 0.0),
            top_p=scalar_or(tensor("TOP_P"), 1.0),
            stop=[s for s in decode_texts(stop.as_numpy()) if s] if stop is not None else [],
            seed=None if seed is None else int(seed.as_numpy().reshape(-1)[0]),
        )
        return [pb_utils.Tensor(name, value) for name, value in inputs.items()]
