"""Triton glue for ``llm_postprocessing``; the logic is in token_bytes.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import triton_python_backend_utils as pb_utils
from june_backend import answer_each, get_logger, parse_model_config
from token_bytes import TokenBytes

log = get_logger("llm_postprocessing")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        parse_model_config(args["model_config"])
        folder = Path(args["model_repository"]) / str(args["model_version"])
        self.to_bytes = TokenBytes(folder / "tokenizer.json")
        log.info("detokenizer ready (%d pieces)", len(self.to_bytes.pieces))

    def execute(self, requests: list) -> list:
        return answer_each(pb_utils, requests, self.detokenize, prefix="llm", log=log)

    def detokenize(self, request: object) -> list:
        def first(name: str) -> int:
            return int(pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)[0])

        # [batch 1, beam 1, new tokens]: exclude_input_in_output streams only the new ones.
        tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS").as_numpy()
        ids = [int(i) for i in tokens.reshape(-1, tokens.shape[-1])[0] if i >= 0]
        return [
            pb_utils.Tensor("TEXT", np.array([self.to_bytes(ids)], dtype=np.object_)),
            pb_utils.Tensor("TOKEN_IDS", np.array(ids, dtype=np.int32)),
            pb_utils.Tensor("FINISH_REASON", np.array([b""], dtype=np.object_)),
            pb_utils.Tensor("PROMPT_TOKENS", np.array([first("NUM_INPUT_TOKENS")], np.int32)),
            pb_utils.Tensor("COMPLETION_TOKENS", np.array([first("NUM_OUTPUT_TOKENS")], np.int32)),
        ]
