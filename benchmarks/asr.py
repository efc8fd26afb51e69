"""ASR speed and accuracy: the Triton ``asr`` ensemble against faster-whisper and transformers.

One run, one machine, the same clips and the same Whisper weights (base by default, from
the offline package). The clips are synthesised on the spot (Piper voice and espeak-ng):

- ``sentences``: 22 single sentences (about 3 s each);
- ``3 s``, ``5 s``, ``10 s``, ``20 s``: six clips of about that length each, whole
  sentences joined with short pauses;
- ``human``: 11 real recordings (1.1-7.1 s) with their transcripts, from pocketsphinx's
  source package on PyPI (LibriVox sentences, spoken playing cards, a robot command).

Systems:

- (a) faster-whisper (CTranslate2) int8 — the named baseline, what a user would run by hand;
- (b) Triton ``asr`` (ONNX Runtime in the Python backend), fp32, Whisper's fixed 30 s window;
- (c) the same with the adaptive window (floor + margin, 5 s steps);
- (d) the adaptive window with an int8 decoder and the fp32 encoder (the default);
- (e) the default with a 20 s floor (``JUNE_ASR_WINDOW_FLOOR_S=20``), for WER;
- (f) the adaptive window on int8 graphs (both);
- (g) transformers ``generate`` (PyTorch fp32), sentences only.

All decode greedily in English without timestamps. RTF = processing time / audio time,
summed over a set's clips; each system runs one warm-up clip first, then every set
``repeats`` times; the median RTF is reported, with its speed ratio to the baseline on the
same set. Run with ``june bench asr``.
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

BASELINE = "faster-whisper int8 (baseline)"
LENGTHS = (3, 5, 10, 20)

Clips = list[tuple[str, np.ndarray]]


@dataclass(frozen=True)
class AsrResult:
    clips: str
    system: str
    rtf: float
    wer: float
    runs: list[float]
    audio_s: float  # mean clip length

    @property
    def ms_per_clip(self) -> float:
        return self.rtf * self.audio_s * 1000


def clip_sets(cache_dir: Path) -> dict[str, Clips]:
    from benchmarks.speech import clips, clips_of_length, human_clips

    sets = {"sentences": clips(), **{f"{n} s": clips_of_length(n) for n in LENGTHS}}
    return {**sets, "human": human_clips(cache_dir)}


def _measure(
    name: str, run: Callable[[np.ndarray], str], sets: dict[str, Clips], repeats: int
) -> list[AsrResult]:
    import jiwer

    from benchmarks.speech import normalise

    results = []
    run(next(iter(sets.values()))[0][1])  # warm-up
    for label, clips in sets.items():
        audio_s = sum(len(a) for _, a in clips) / 16000
        rtfs, texts = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            texts = [run(audio) for _, audio in clips]
            rtfs.append((time.perf_counter() - start) / audio_s)
        wer = jiwer.wer([normalise(t) for t, _ in clips], [normalise(t) for t in texts])
        rtf = statistics.median(rtfs)
        log.info("%s, %s: RTF %.3f, WER %.3f", name, label, rtf, wer)
        results.append(AsrResult(label, name, rtf, wer, rtfs, audio_s / len(clips)))
    return results


def run_benchmark(
    model: str, cache_dir: Path, runtime_dir: Path, *, repeats: int = 3, threads: int = 2
) -> list[AsrResult]:
    import torch
    import tritonclient.grpc as grpcclient
    from faster_whisper import WhisperModel

    from exporters.ct2_whisper import convert_ct2_whisper
    from exporters.repository import PROFILE_DEFAULTS, build_repository
    from exporters.whisper import resolve_source
    from orchestrator.triton.launcher import TritonServer

    sets = clip_sets(cache_dir)
    ct2_dir, kind = resolve_source(model, cache_dir)
    results: list[AsrResult] = []

    fw = WhisperModel(str(ct2_dir), device="cpu", compute_type="int8", cpu_threads=threads)

    def faster_whisper(audio: np.ndarray) -> str:
        segments, _ = fw.transcribe(
            audio, language="en", beam_size=1, without_timestamps=True,
            condition_on_previous_text=False, vad_filter=False,
        )  # fmt: skip
        return " ".join(s.text.strip() for s in segments)

    results += _measure(BASELINE, faster_whisper, sets, repeats)

    adaptive = PROFILE_DEFAULTS["cpu"]
    variants = (
        ("fp32, full 30 s window", "fp32", "30"),
        ("fp32, adaptive window", "fp32", adaptive["asr_window_floor_s"]),
        (
            "fp32 encoder + int8 decoder, adaptive (default)",
            "int8-decoder",
            adaptive["asr_window_floor_s"],
        ),
        ("fp32 encoder + int8 decoder, adaptive from a 20 s floor", "int8-decoder", "20"),
        ("int8, adaptive window", "int8", adaptive["asr_window_floor_s"]),
    )
    for label, precision, floor in variants:
        repo = build_repository(
            profile="cpu",
            out=runtime_dir / f"repo-{precision}-{floor}",
            cache_dir=cache_dir,
            sources={"whisper": model},
            options={"whisper": {"precision": precision}},
            overrides={"asr_window_floor_s": floor, "intra_op_threads": str(threads)},
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

            results += _measure(f"Triton asr, {label}", triton, sets, repeats)
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

        results += _measure(
            "transformers (PyTorch fp32)", transformers_run, {"sentences": sets["sentences"]}, 1
        )
    return results


def rows(results: list[AsrResult]) -> list[list[str]]:
    """One row per clip set and system; speed is against the baseline on the same set."""
    base = {r.clips: r for r in results if r.system == BASELINE}
    order = list(base)
    out = []
    for label in order:
        for r in (r for r in results if r.clips == label):
            out.append(
                [
                    f"{label} ({r.audio_s:.1f} s avg)",
                    r.system,
                    f"{r.rtf:.3f}",
                    f"{r.ms_per_clip:.0f}",
                    f"{base[label].rtf / r.rtf:.2f}x",
                    f"{r.wer * 100:.1f}%",
                ]
            )
    return out


HEADERS = ["clips", "system", "median RTF", "ms per clip", "speed vs baseline", "WER"]


def markdown_table(results: list[AsrResult]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|---|---|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    return "\n".join(lines)
