"""ASR speed and accuracy: the Triton ``asr`` ensemble against faster-whisper and transformers.

One run, one machine, the same clips and the same Whisper weights (base by default, from
the offline package). The clips are synthesised on the spot (Piper voice and espeak-ng):

- ``questions``: 60 questions and commands for a voice assistant, each in three voices
  (Piper, espeak-ng American and British): 180 clips of about 3 s, 1,539 words. Timed once
  (one pass is already 180 clips); it is the set large enough to judge a WER difference;
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
- (e) the default with a 15 s floor (``JUNE_ASR_WINDOW_FLOOR_S=15``), for WER;
- (f) the adaptive window on int8 graphs (both);
- (g) transformers ``generate`` (PyTorch fp32), sentences only.

All decode greedily in English without timestamps. RTF = processing time / audio time,
summed over a set's clips; each system runs one warm-up clip first, then every set
``repeats`` times; the median RTF is reported, with its speed ratio to the baseline on the
same set. Run with ``june bench asr``.

WER against the full window is judged clip by clip, not only pooled: each system's word
errors per clip minus the full window's on the same clip, with a 95% interval from a paired
bootstrap over the clips, and the number of clips each system got worse and better. On
short clips a shorter window changes a clip's transcript now and then, in either direction;
on small sets one such change is a point of WER or more.
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
FULL_WINDOW = "Triton asr, fp32, full 30 s window"
LENGTHS = (3, 5, 10, 20)
ONE_PASS = frozenset({"questions"})  # sets timed once, whatever ``repeats`` says

Clips = list[tuple[str, np.ndarray]]


@dataclass(frozen=True)
class AsrResult:
    clips: str
    system: str
    rtf: float
    wer: float
    runs: list[float]
    audio_s: float  # mean clip length
    errors: tuple[int, ...] = ()  # word errors per clip (substitutions, deletions, insertions)
    words: tuple[int, ...] = ()  # reference words per clip

    @property
    def ms_per_clip(self) -> float:
        return self.rtf * self.audio_s * 1000


def clip_errors(references: list[str], hypotheses: list[str]) -> tuple[int, ...]:
    """Word errors of each hypothesis against its reference (both normalised already)."""
    import jiwer

    def errors(chunk: jiwer.AlignmentChunk) -> int:
        if chunk.type == "insert":
            return chunk.hyp_end_idx - chunk.hyp_start_idx
        if chunk.type in ("substitute", "delete"):
            return chunk.ref_end_idx - chunk.ref_start_idx
        return 0  # equal

    aligned = jiwer.process_words(references, hypotheses).alignments
    return tuple(sum(errors(chunk) for chunk in chunks) for chunks in aligned)


@dataclass(frozen=True)
class WerDifference:
    """A system's WER minus a reference system's on the same clips, in points."""

    points: float
    low: float  # 95% interval, paired bootstrap over clips
    high: float
    worse: int  # clips with more word errors than the reference
    better: int


def wer_difference(
    result: AsrResult, reference: AsrResult, *, draws: int = 5000, seed: int = 0
) -> WerDifference:
    """Paired over clips: resampling whole clips keeps each clip's two transcripts together."""
    if result.words != reference.words or len(result.errors) != len(result.words):
        raise ValueError(f"{result.system} and {reference.system} were not run on the same clips")
    diff = np.array(result.errors) - np.array(reference.errors)
    words = np.array(result.words)
    picks = np.random.default_rng(seed).integers(0, len(diff), (draws, len(diff)))
    resampled = diff[picks].sum(axis=1) / words[picks].sum(axis=1) * 100
    low, high = np.percentile(resampled, [2.5, 97.5])
    return WerDifference(
        points=float(diff.sum() / words.sum() * 100),
        low=float(low),
        high=float(high),
        worse=int((diff > 0).sum()),
        better=int((diff < 0).sum()),
    )


def clip_sets(cache_dir: Path) -> dict[str, Clips]:
    from benchmarks.speech import clips, clips_of_length, human_clips, questions

    sets = {"questions": questions(), "sentences": clips()}
    sets |= {f"{n} s": clips_of_length(n) for n in LENGTHS}
    return {**sets, "human": human_clips(cache_dir)}


def _measure(
    name: str, run: Callable[[np.ndarray], str], sets: dict[str, Clips], repeats: int
) -> list[AsrResult]:
    from benchmarks.speech import normalise

    results = []
    run(next(iter(sets.values()))[0][1])  # warm-up
    for label, clips in sets.items():
        audio_s = sum(len(a) for _, a in clips) / 16000
        rtfs, texts = [], []
        for _ in range(1 if label in ONE_PASS else repeats):
            start = time.perf_counter()
            texts = [run(audio) for _, audio in clips]
            rtfs.append((time.perf_counter() - start) / audio_s)
        references = [normalise(t) for t, _ in clips]
        errors = clip_errors(references, [normalise(t) for t in texts])
        words = tuple(len(r.split()) for r in references)
        wer = sum(errors) / sum(words)
        rtf = statistics.median(rtfs)
        log.info("%s, %s: RTF %.3f, WER %.3f", name, label, rtf, wer)
        results.append(AsrResult(label, name, rtf, wer, rtfs, audio_s / len(clips), errors, words))
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
        (FULL_WINDOW.removeprefix("Triton asr, "), "fp32", "30"),
        ("fp32, adaptive window", "fp32", adaptive["asr_window_floor_s"]),
        (
            "fp32 encoder + int8 decoder, adaptive (default)",
            "int8-decoder",
            adaptive["asr_window_floor_s"],
        ),
        ("fp32 encoder + int8 decoder, adaptive from a 15 s floor", "int8-decoder", "15"),
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
    full = {r.clips: r for r in results if r.system == FULL_WINDOW}
    out = []
    for label in base:
        for r in (r for r in results if r.clips == label):
            versus, changed = "-", "-"
            if label in full and r is not full[label]:
                d = wer_difference(r, full[label])
                versus = f"{d.points:+.1f} ({d.low:+.1f} to {d.high:+.1f})"
                changed = f"{d.worse} / {d.better}"
            out.append(
                [
                    f"{label} ({len(r.words)} clips, {r.audio_s:.1f} s avg)",
                    r.system,
                    f"{r.rtf:.3f}",
                    f"{r.ms_per_clip:.0f}",
                    f"{base[label].rtf / r.rtf:.2f}x",
                    f"{r.wer * 100:.1f}%",
                    versus,
                    changed,
                ]
            )
    return out


HEADERS = [
    "clips",
    "system",
    "median RTF",
    "ms per clip",
    "speed vs baseline",
    "WER",
    "WER vs full window, points (95% CI)",
    "clips worse / better",
]


def markdown_table(results: list[AsrResult]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    return "\n".join(lines)
