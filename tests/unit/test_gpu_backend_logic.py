"""The gpu profile's Python models, without a server: chat preprocessing and token bytes."""

import numpy as np
import pytest
from tokenizers import Tokenizer

from tests.conftest import load_backend_module

prompt = load_backend_module("llm_preprocessing", "prompt")
chat = load_backend_module("llm_preprocessing", "chat")
GREEDY = chat.Sampling(temperature=0.0, top_p=0.5)
SAMPLED = chat.Sampling(temperature=0.7, top_p=0.9)
token_bytes = load_backend_module("llm_postprocessing", "token_bytes")

MESSAGES = [{"role": "user", "content": "Hi there"}]


@pytest.fixture(scope="module")
def prep(trtllm_builds):
    return prompt.ChatPreprocessor(trtllm_builds["llm"])


def test_stop_words_are_tensorrt_llms_two_row_layout(prep):
    tok = prep.tokenizer
    words = prep.stop_words(["\n\n", "User:"])
    first = tok.encode("\n\n", add_special_tokens=False).ids
    second = tok.encode("User:", add_special_tokens=False).ids
    flat = first + second + [i for i in prep.eos_ids[1:]]
    assert words.dtype == np.int32 and words.shape == (2, len(flat))
    assert words[0].tolist() == flat
    ends = [len(first), len(first) + len(second)]
    ends += [len(first) + len(second) + k + 1 for k in range(len(prep.eos_ids) - 1)]
    assert words[1].tolist() == ends + [-1] * (len(flat) - len(ends))
    if len(prep.eos_ids) == 1:
        assert prep.stop_words([]).tolist() == [[0], [-1]]  # nothing to stop on


def test_inputs_are_batched_by_one_and_greedy_is_top_k_one(prep):
    ids = prep.prompt_ids(MESSAGES)
    inputs = prep.inputs(MESSAGES, max_tokens=8, sampling=GREEDY, stop=[], seed=7)
    assert inputs["input_ids"].tolist() == [ids]
    assert inputs["input_lengths"].tolist() == [[len(ids)]]
    assert inputs["request_output_len"].tolist() == [[8]]
    assert inputs["end_id"].tolist() == [[prep.eos_ids[0]]]
    assert inputs["runtime_top_k"].tolist() == [[1]]
    assert inputs["temperature"].tolist() == [[1.0]]  # never 0: TensorRT-LLM divides by it
    assert inputs["seed"].dtype == np.uint64 and inputs["seed"].tolist() == [[7]]
    assert all(v.shape[0] == 1 for v in inputs.values())
    sampled = prep.inputs(MESSAGES, max_tokens=8, sampling=SAMPLED, stop=[], seed=None)
    again = prep.inputs(MESSAGES, max_tokens=8, sampling=SAMPLED, stop=[], seed=None)
    assert sampled["runtime_top_k"].tolist() == [[50]]  # Hugging Face's default top_k
    assert sampled["repetition_penalty"].tolist() == [[1.0]]
    assert sampled["seed"].tolist() != again["seed"].tolist()  # no shared default seed


def test_limits_match_the_cpu_profile(prep):
    with pytest.raises(ValueError, match="0 <= TEMPERATURE <= 2"):
        prep.inputs(
            MESSAGES, max_tokens=8, sampling=chat.Sampling(temperature=2.5), stop=[], seed=None
        )
    with pytest.raises(ValueError, match="exceeds the context length"):
        prep.inputs(MESSAGES, max_tokens=10**7, sampling=GREEDY, stop=[], seed=None)


def test_token_bytes_join_split_characters(trtllm_builds, prep):
    folder = trtllm_builds["llm"]
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    to_bytes = token_bytes.TokenBytes(folder / "tokenizer.json")
    text = "Tokyo 東京 🗼, naïve café!\n"
    ids = tok.encode(text, add_special_tokens=False).ids
    pieces = [to_bytes([i]) for i in ids]
    assert any(_invalid_utf8(p) for p in pieces)  # some characters really are split
    assert b"".join(pieces).decode() == tok.decode(ids) == text
    assert to_bytes([prep.eos_ids[0]]) == b""  # end of turn carries no text


def _invalid_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return True
    return False


def test_token_bytes_refuses_tokenizers_it_cannot_map(embedder_export):
    with pytest.raises(ValueError, match="byte-level BPE"):
        token_bytes.TokenBytes(embedder_export / "tokenizer.json")


def test_whisper_requests_stay_within_the_decoder_engine(whisper_export):
    whisper_trtllm = load_backend_module("asr_whisper", "whisper_trtllm")

    def engine(batch, outputs):
        raise AssertionError("building requests sends nothing")

    whisper = whisper_trtllm.WhisperTrtllm(whisper_export, engine, max_seq_len=238)
    window = np.zeros((whisper.meta["n_mels"], whisper.meta["n_frames"]), dtype=np.float32)
    prompt_ids = whisper.prompt("en")
    greedy = whisper.greedy_inputs(window, prompt_ids)
    assert greedy["request_output_len"].tolist() == [[238 - len(prompt_ids)]]
    assert greedy["encoder_input_features"].shape == (1, whisper.meta["n_frames"], 80)
    assert greedy["encoder_input_features"].dtype == np.float16
    assert greedy["decoder_input_ids"].tolist() == [prompt_ids]
    bias = greedy["embedding_bias"][0]
    assert (bias[whisper.suppress] < -1e3).all() and bias[whisper.meta["eot"]] == 0
    unlimited = whisper_trtllm.WhisperTrtllm(whisper_export, engine)
    assert unlimited.max_seq_len == whisper.meta["max_target_positions"]


def test_adaptive_windows_reach_the_encoder_engine_at_their_length(whisper_export):
    """A 10 s window is 1000 frames in and 500 encoder positions out (the engine is built
    for up to 3000 frames; TensorRT-LLM's remove_input_padding takes shorter inputs)."""
    whisper_trtllm = load_backend_module("asr_whisper", "whisper_trtllm")
    sent: list[dict] = []

    def engine(batch, outputs):
        sent.extend(batch)
        if "generation_logits" in outputs:
            logits = np.zeros((1, 1, 1, whisper.meta["vocab_size"]), np.float32)
            return [{"generation_logits": logits} for _ in batch]
        return [
            {
                "output_ids": np.array([[[whisper.meta["eot"]]]], np.int32),
                "sequence_length": np.array([[0]], np.int32),
                "cum_log_probs": np.array([[0.0]], np.float32),
            }
            for _ in batch
        ]

    whisper = whisper_trtllm.WhisperTrtllm(whisper_export, engine)
    rng = np.random.default_rng(0)
    short = rng.standard_normal((1, 80, 1000)).astype(np.float32)
    full = rng.standard_normal((1, 80, 3000)).astype(np.float32)
    whisper.transcribe([(short, "en"), (full, "en")])
    lengths = sorted({int(r["input_lengths"][0, 0]) for r in sent})
    assert lengths == [1000, 3000]
    for request in sent:
        frames = int(request["input_lengths"][0, 0])
        assert request["encoder_input_features"].shape == (1, frames, 80)
        assert int(request["encoder_output_lengths"][0, 0]) == frames // 2
