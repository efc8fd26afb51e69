"""ASR speed and accuracy: the Triton ``asr`` ensemble against faster-whisper and transformers.

One run, one machine, the same clips (22 sentences synthesised on the spot: Piper voice
and espeak-ng) and the same Whisper weights (base by default, from the offline package):

- (a) Triton ``asr`` (ONNX Runtime in the Python backend), fp32 and int8 graphs;
- (b) faster-whisper (CTranslate2) int8 — the named baseline;
- (c) transformers ``generate`` (PyTorch fp32).

All decode greedily in English without timestamps. RTF = processing time / audio time,
summed over the clips; each system runs one warm-up clip first, then all clips
``repeats`` times, and the median RTF is reported with its ratio to the baseline.
Run with ``june bench asr``.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("june.bench.asr")


@dataclass(frozen=True)
class AsrResult:
    system: str
    rtf: float
    wer: float
    runs: list[float]


def _measure(
    name: str, run: Callable[[np.ndarray], str], clips: list[tuple[str, np.ndarray]], repeats: int
) -> AsrResult:
    import jiwer

    from benchmarks.speech import normalise

    run(clips[0][1])  # warm-up
    audio_s = sum(len(a) for _, a in clips) / 16000
    rtfs, texts = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        texts = [run(audio) for _, audio in clips]
        rtfs.append((time.perf_counter() - start) / audio_s)
    wer = jiwer.wer([normalise(t) for t, _ in clips], [normalise(t) for t in texts])
    log.info("%s: RTF %.3f, WER %.3f", name, statistics.median(rtfs), wer)
    return AsrResult(name, statistics.median(rtfs), wer, rtfs)


def run_benchmark(
    model: str, cache_dir: Path, runtime_dir: Path, *, repeats: int = 3, threads: int = 2
) -> list[AsrResult]:
    import torch
    import tritonclient.grpc as grpcclient
    from faster_whisper import WhisperModel

    from benchmarks.speech import clips as make_clips
    from exporters.ct2_whisper import convert_ct2_whisper
    from exporters.repository import build_repository
    from exporters.whisper import resolve_source
    from orchestrator.triton.launcher import TritonServer

    clips = make_clips()
    ct2_dir, kind = resolve_source(model, cache_dir)
    results: list[AsrResult] = []

    fw = WhisperModel(str(ct2_dir), device="cpu", compute_type="int8", cpu_threads=threads)

    def faster_whisper(audio: np.ndarray) -> str:
        segments, _ = fw.transcribe(
            audio, language="en", beam_size=1, without_timestamps=True,
            condition_on_previous_text=False, vad_filter=False,
        )  # fmt: skip
        return " ".join(s.text.strip() for s in segments)

    results.append(_measure("faster-whisper int8 (baseline)", faster_whisper, clips, repeats))

    for precision in ("fp32", "int8"):
        repo = build_repository(
            profile="cpu",
            out=runtime_dir / f"repo-{precision}",
            cache_dir=cache_dir,
            sources={"whisper": model},
            options={"whisper": {"precision": precision}},
        )
        with TritonServer(
            repo,
            runtime_dir=runtime_dir / "triton",
            http_port=28100,
            grpc_port=28101,
            metrics_port=28102,
        ) as server:
            client = grpcclient.InferenceServerClient(server.grpc_url)

            def triton(audio: np.ndarray, client: grpcclient.InferenceServerClient = client) -> str:
                tensor = grpcclient.InferInput("AUDIO", [1, len(audio)], "FP32")
                tensor.set_data_from_numpy(audio[None])
                lang = grpcclient.InferInput("LANGUAGE", [1, 1], "BYTES")
                lang.set_data_from_numpy(np.array([[b"en"]], dtype=np.object_))
                out = client.infer("asr", [tensor, lang]).as_numpy("TRANSCRIPT")
                return out.reshape(-1)[0].decode()

            results.append(
                _measure(f"Triton asr, ONNX Runtime {precision}", triton, clips, repeats)
            )
            client.close()

    if kind == "ctranslate2":
        from tokenizers import Tokenizer
        from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

        torch.set_num_threads(threads)
        hf_dir = convert_ct2_whisper(ct2_dir, runtime_dir / "hf")
        hf = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
        extractor = WhisperFeatureExtractor(feature_size=hf.config.num_mel_bins)
        tokenizer = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
        multilingual = hf.generation_config.is_multilingual

        def transformers_run(audio: np.ndarray) -> str:
            features = extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
            kwargs = {"language": "en", "task": "transcribe"} if multilingual else {}
            with torch.no_grad():
                tokens = hf.generate(features, num_beams=1, do_sample=False, **kwargs)
            return tokenizer.decode(tokens[0].tolist(), skip_special_tokens=True)

        results.append(_measure("transformers (PyTorch fp32)", transformers_run, clips, repeats))
    return results


def markdown_table(results: list[AsrResult]) -> str:
    base = results[0].rtf
    lines = ["| system | median RTF | speed vs baseline | WER |", "|---|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.system} | {r.rtf:.3f} | {base / r.rtf:.2f}x | {r.wer * 100:.1f}% |")
    return "\n".join(lines)
