"""NeMo side of ``june export tts``: runs in the NeMo environment, never in June's.

NeMo 3 needs numpy 2 and the Triton Python backend needs numpy < 2, so NeMo lives in a
virtual environment of its own (``make nemo-env``) and June calls this file there as a
subprocess. It imports only the standard library, torch, NeMo and ONNX Runtime, and
prints one JSON object on stdout.

Commands:
  export  --acoustic A.nemo --vocoder V.nemo --out DIR
      FastPitch -> fastpitch.onnx, HiFi-GAN -> hifigan.onnx, tts.json (tokenizer, sample
      rate, mel layout, speakers: read from the checkpoints), and the parity of ONNX
      Runtime against PyTorch on sample texts.
  check   --acoustic A.nemo --vocoder V.nemo --out DIR --texts JSON
      Parity again, on the given texts, plus NeMo's own token ids for them (what June's
      frontend must reproduce).
  random  --size tiny|real --out DIR [--seed N]
      FastPitch + HiFi-GAN .nemo files of the real architecture with random weights:
      no English FastPitch/HiFi-GAN weights install offline, so tests and the speed
      benchmark use these. ``real`` has the published model sizes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

SAMPLE_TEXTS = [
    "hello world, this is a test.",
    "the quick brown fox jumps over the lazy dog!",
    "it's twelve dollars and fifty cents?",
]

# FastPitch (fastpitch_align_v1.05) and HiFi-GAN v1 sizes; "tiny" keeps tests fast.
SIZES: dict[str, dict[str, int]] = {
    "real": {
        "d_model": 384,
        "layers": 6,
        "d_head": 64,
        "d_inner": 1536,
        "predictor": 256,
        "hifigan_channels": 512,
    },
    "tiny": {
        "d_model": 64,
        "layers": 2,
        "d_head": 16,
        "d_inner": 256,
        "predictor": 32,
        "hifigan_channels": 32,
    },
}
AUDIO = {
    "sample_rate": 22050,
    "n_mels": 80,
    "n_fft": 1024,
    "win": 1024,
    "hop": 256,
    "lowfreq": 0,
    "highfreq": 8000,
}


def _quiet() -> None:
    logging.disable(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore")


def _fastpitch_config(size: dict[str, int]) -> dict[str, Any]:
    d = size["d_model"]
    fft = {
        "n_layer": size["layers"],
        "n_head": 1,
        "d_model": d,
        "d_head": size["d_head"],
        "d_inner": size["d_inner"],
        "kernel_size": 3,
        "dropout": 0.1,
        "dropatt": 0.1,
        "dropemb": 0.0,
    }
    predictor = {
        "_target_": "nemo.collections.tts.modules.fastpitch.TemporalPredictor",
        "input_size": d,
        "kernel_size": 3,
        "filter_size": size["predictor"],
        "dropout": 0.1,
        "n_layers": 2,
    }
    return {
        "learn_alignment": True,
        "n_speakers": 1,
        "max_token_duration": 75,
        "symbols_embedding_dim": d,
        "pitch_embedding_kernel_size": 3,
        "pitch_fmin": 65.4,
        "pitch_fmax": 2093.0,
        "pitch_mean": 212.4,
        "pitch_std": 68.5,
        "sample_rate": AUDIO["sample_rate"],
        "n_mel_channels": AUDIO["n_mels"],
        "n_window_size": AUDIO["win"],
        "n_window_stride": AUDIO["hop"],
        "n_fft": AUDIO["n_fft"],
        "lowfreq": AUDIO["lowfreq"],
        "highfreq": AUDIO["highfreq"],
        "window": "hann",
        "text_tokenizer": {
            "_target_": "nemo.collections.common.tokenizers.text_to_speech.tts_tokenizers."
            "EnglishCharsTokenizer",
            "punct": True,
            "apostrophe": True,
            "pad_with_space": True,
        },
        "train_ds": {"dataset": {"_target_": "nemo.collections.tts.data.dataset.TTSDataset"}},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "features": AUDIO["n_mels"],
            "lowfreq": AUDIO["lowfreq"],
            "highfreq": AUDIO["highfreq"],
            "n_fft": AUDIO["n_fft"],
            "n_window_size": AUDIO["win"],
            "window_size": False,
            "n_window_stride": AUDIO["hop"],
            "window_stride": False,
            "pad_to": 1,
            "pad_value": 0,
            "sample_rate": AUDIO["sample_rate"],
            "window": "hann",
            "normalize": None,
            "preemph": None,
            "dither": 0.0,
            "frame_splicing": 1,
            "log": True,
            "log_zero_guard_type": "add",
            "log_zero_guard_value": 1e-05,
            "mag_power": 1.0,
        },
        "input_fft": {
            "_target_": "nemo.collections.tts.modules.transformer.FFTransformerEncoder",
            **fft,
            "d_embed": d,
        },
        "output_fft": {
            "_target_": "nemo.collections.tts.modules.transformer.FFTransformerDecoder",
            **fft,
        },
        "alignment_module": {
            "_target_": "nemo.collections.tts.modules.aligner.AlignmentEncoder",
            "n_text_channels": d,
        },
        "duration_predictor": predictor,
        "pitch_predictor": predictor,
        "optim": {"name": "adamw", "lr": 1e-3},
    }


def _hifigan_config(size: dict[str, int]) -> dict[str, Any]:
    return {
        "train_ds": {"dataset": {"_target_": "nemo.collections.tts.data.dataset.VocoderDataset"}},
        "preprocessor": {
            "_target_": "nemo.collections.asr.parts.preprocessing.features.FilterbankFeatures",
            "nfilt": AUDIO["n_mels"],
            "lowfreq": AUDIO["lowfreq"],
            "highfreq": AUDIO["highfreq"],
            "n_fft": AUDIO["n_fft"],
            "n_window_size": AUDIO["win"],
            "n_window_stride": AUDIO["hop"],
            "pad_to": 0,
            "pad_value": -11.52,
            "sample_rate": AUDIO["sample_rate"],
            "window": "hann",
            "normalize": None,
            "preemph": None,
            "dither": 0.0,
            "frame_splicing": 1,
            "log": True,
            "log_zero_guard_type": "clamp",
            "log_zero_guard_value": 1e-05,
            "mag_power": 1.0,
            "use_grads": False,
            "exact_pad": True,
        },
        "generator": {
            "_target_": "nemo.collections.tts.modules.hifigan_modules.Generator",
            "resblock": 1,
            "upsample_rates": [8, 8, 2, 2],
            "upsample_kernel_sizes": [16, 16, 4, 4],
            "upsample_initial_channel": size["hifigan_channels"],
            "resblock_kernel_sizes": [3, 7, 11],
            "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        },
        "optim": {"_target_": "torch.optim.AdamW", "lr": 0.0002, "betas": [0.8, 0.99]},
        "max_steps": 1,
        "l1_loss_factor": 45,
        "denoise_strength": 0.0025,
    }


def _speech_like_durations(model: Any, frames_per_token: int = 6) -> None:
    """Random weights predict durations near zero: almost no frames, a meaningless speed
    test. Make every token last ``frames_per_token`` mel frames (6 x 256 samples at 22 kHz,
    about 70 ms per character: ordinary speech), so the vocoder has real work to do."""
    import math

    import torch

    fc = model.fastpitch.duration_predictor.fc
    with torch.no_grad():
        fc.weight.zero_()
        fc.bias.fill_(math.log(1 + frames_per_token))


def make_random(size_name: str, out: Path, seed: int) -> dict[str, Any]:
    import torch
    from nemo.collections.tts.models import FastPitchModel, HifiGanModel
    from omegaconf import OmegaConf

    size = SIZES[size_name]
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, cls, config in (
        ("fastpitch", FastPitchModel, _fastpitch_config(size)),
        ("hifigan", HifiGanModel, _hifigan_config(size)),
    ):
        # No training data exists here: skip the data loaders a config would build.
        cls.setup_training_data = lambda self, cfg: None  # type: ignore[method-assign]
        cls.setup_validation_data = lambda self, cfg: None  # type: ignore[method-assign]
        model = cls(cfg=OmegaConf.create(config)).eval()
        if name == "fastpitch":
            _speech_like_durations(model)
        path = out / f"{name}.nemo"
        model.save_to(str(path))
        made[name] = {"path": str(path), "parameters": sum(p.numel() for p in model.parameters())}
    return made


def _load(acoustic: Path, vocoder: Path) -> tuple[Any, Any]:
    from nemo.collections.tts.models import FastPitchModel, HifiGanModel

    fastpitch = FastPitchModel.restore_from(str(acoustic), map_location="cpu").eval()
    hifigan = HifiGanModel.restore_from(str(vocoder), map_location="cpu").eval()
    return fastpitch, hifigan


def describe(fastpitch: Any, hifigan: Any) -> dict[str, Any]:
    """Everything June's serving code needs, read from the checkpoints."""
    vocab = fastpitch.vocab
    kind = type(vocab).__name__
    if "BaseCharsTokenizer" not in {c.__name__ for c in type(vocab).__mro__}:
        raise SystemExit(
            f"tokenizer {kind} is not supported: June's frontend reproduces NeMo's character "
            "tokenizers (e.g. EnglishCharsTokenizer); phoneme tokenizers need NeMo's G2P"
        )
    cfg, vcfg = fastpitch.cfg, hifigan.cfg
    rate, vrate = int(cfg.sample_rate), int(vcfg.preprocessor.sample_rate)
    mels, vmels = int(cfg.n_mel_channels), int(vcfg.preprocessor.nfilt)
    if rate != vrate or mels != vmels:
        raise SystemExit(
            f"acoustic model ({rate} Hz, {mels} mels) and vocoder ({vrate} Hz, {vmels} mels) "
            "do not match"
        )
    speakers = fastpitch.fastpitch.speaker_emb
    return {
        "sample_rate": rate,
        "n_mels": mels,
        "hop_length": int(cfg.n_window_stride),
        "n_speakers": int(speakers.num_embeddings) if speakers is not None else 1,
        "tokenizer": {
            "class": kind,
            "tokens": list(vocab.tokens),
            "pad": int(vocab.pad),
            "space": int(vocab.space),
            "oov": int(vocab.oov),
            "punct": list(vocab.PUNCT_LIST) if vocab.punct else [],
            "pad_with_space": bool(vocab.pad_with_space),
            "lowercase": True,
        },
    }


def parity(fastpitch: Any, hifigan: Any, out: Path, texts: list[str]) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort
    import torch

    acoustic = ort.InferenceSession(str(out / "fastpitch.onnx"), providers=["CPUExecutionProvider"])
    vocoder = ort.InferenceSession(str(out / "hifigan.onnx"), providers=["CPUExecutionProvider"])
    spect_diff = audio_diff = 0.0
    tokens = []
    for text in texts:
        ids = fastpitch.vocab.encode(text)
        tokens.append(ids)
        text_t = torch.tensor([ids], dtype=torch.long)
        pitch = torch.zeros_like(text_t, dtype=torch.float32)
        pace = torch.ones_like(text_t, dtype=torch.float32)
        with torch.no_grad():
            spect = fastpitch.fastpitch.infer(text=text_t, pitch=pitch, pace=pace)[0]
            audio = hifigan.generator(x=spect)
        feeds = {"text": text_t.numpy(), "pitch": pitch.numpy(), "pace": pace.numpy()}
        onnx_spect = acoustic.run(["spect"], feeds)[0]
        if onnx_spect.shape != tuple(spect.shape):
            raise SystemExit(f"ONNX spectrogram shape {onnx_spect.shape} != {tuple(spect.shape)}")
        spect_diff = max(spect_diff, float(np.abs(onnx_spect - spect.numpy()).max()))
        onnx_audio = vocoder.run(["audio"], {"spec": spect.numpy()})[0]
        audio_diff = max(audio_diff, float(np.abs(onnx_audio - audio.numpy()).max()))
    return {"acoustic_max_abs": spect_diff, "vocoder_max_abs": audio_diff, "tokens": tokens}


def export(acoustic: Path, vocoder: Path, out: Path) -> dict[str, Any]:
    fastpitch, hifigan = _load(acoustic, vocoder)
    meta = describe(fastpitch, hifigan)
    out.mkdir(parents=True, exist_ok=True)
    fastpitch.export(str(out / "fastpitch.onnx"))
    hifigan.export(str(out / "hifigan.onnx"))
    meta["parity"] = parity(fastpitch, hifigan, out, SAMPLE_TEXTS)
    del meta["parity"]["tokens"]
    (out / "tts.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return meta


def check(acoustic: Path, vocoder: Path, out: Path, texts: list[str]) -> dict[str, Any]:
    fastpitch, hifigan = _load(acoustic, vocoder)
    hifigan._prepare_for_export()  # the exported graph has weight norm folded in
    return parity(fastpitch, hifigan, out, texts)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["export", "check", "random"])
    parser.add_argument("--acoustic", type=Path)
    parser.add_argument("--vocoder", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--texts", default="[]")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    _quiet()
    if args.command == "random":
        result = make_random(args.size, args.out, args.seed)
    elif args.command == "export":
        result = export(args.acoustic, args.vocoder, args.out)
    else:
        result = check(args.acoustic, args.vocoder, args.out, json.loads(args.texts))
    sys.stdout.write("JUNE_RESULT " + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
