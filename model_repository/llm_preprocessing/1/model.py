"""Triton glue for ``llm_preprocessing``; the logic is in prompt.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton_python_backend_utils as pb_utils
from chat import read_chat_request
from june_backend import answer_each, get_logger, parse_model_config
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
        chat = read_chat_request(pb_utils, request)
        inputs = self.prep.inputs(
            chat.messages,
            max_tokens=chat.max_tokens,
            sampling=chat.sampling(self.prep.defaults),
            stop=chat.stop,
            seed=chat.seed,
            enable_thinking=chat.enable_thinking,
        )
        return [pb_utils.Tensor(name, value) for name, value in inputs.items()]
