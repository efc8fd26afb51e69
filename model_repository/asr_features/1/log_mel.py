"""Whisper's log-mel features in numpy (no torch at serve time), window by window.

Matches Hugging Face's ``WhisperFeatureExtractor``: each window is zero-padded to its length,
framed with a centred, reflect-padded periodic Hann STFT (n_fft 400, hop 160), projected on
the checkpoint's mel filters, log10'd, floored at max - 8 and scaled to ``(x + 4) / 4``.
Audio longer than 30 s is cut into 30 s windows at the quietest moment of each window's
last five seconds, so words are rarely split.

Adaptive windows: a clip that fits in one window gets a shorter one, as whisper.cpp's
``audio_ctx`` does: ``max(floor, seconds + margin)`` rounded up to a whole step (5 s), at most
30 s. The encoder's cost grows with the window, so a 5 s question pays for 10 s of frames
instead of 30 s. Below a floor of about 10 s the decoder starts to repeat itself; the floor
and margin are settings (a floor of 30 turns it off). The few window sizes let requests
of similar length batch together.
"""

from __future__ import annotations

import math

import numpy as np


class LogMel:
    def __init__(
        self,
        mel_filters: np.ndarray,
        *,
        n_fft: int = 400,
        hop_length: int = 160,
        sample_rate: int = 16000,
        chunk_seconds: int = 30,
        window_floor_s: float = 30.0,
        window_margin_s: float = 0.0,
        window_step_s: float = 5.0,
    ) -> None:
        self.filters = np.asarray(mel_filters, dtype=np.float32)  # [n_fft // 2 + 1, n_mels]
        self.n_fft = n_fft
        self.hop = hop_length
        self.sample_rate = sample_rate
        self.n_samples = chunk_seconds * sample_rate
        self.n_frames = self.n_samples // hop_length
        self.chunk_seconds = chunk_seconds
        if window_floor_s <= 0 or window_margin_s < 0 or window_step_s <= 0:
            raise ValueError("window floor and step must be > 0, margin >= 0")
        self.window_floor_s = math.ceil(min(window_floor_s, chunk_seconds))
        self.window_margin_s = window_margin_s
        self.window_step_s = window_step_s
        n = np.arange(n_fft)
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)).astype(np.float64)

    @property
    def n_mels(self) -> int:
        return int(self.filters.shape[1])

    def split(self, audio: np.ndarray, search_seconds: float = 5.0) -> list[np.ndarray]:
        """Windows of at most 30 s, cut at low-energy points."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        windows, start, frame = [], 0, self.sample_rate // 10
        while len(audio) - start > self.n_samples:
            lo = start + self.n_samples - int(search_seconds * self.sample_rate)
            region = audio[lo : start + self.n_samples]
            usable = len(region) // frame * frame
            energy = (region[:usable].reshape(-1, frame) ** 2).mean(axis=1)
            cut = lo + int(np.argmin(energy)) * frame + frame // 2
            windows.append(audio[start:cut])
            start = cut
        windows.append(audio[start:])
        return windows

    @property
    def adaptive(self) -> bool:
        return self.window_floor_s < self.chunk_seconds

    def window_seconds(self, samples: int) -> int:
        """The window for a clip of ``samples`` that fits in one: whole seconds, <= 30."""
        if not self.adaptive:
            return self.chunk_seconds
        wanted = samples / self.sample_rate + self.window_margin_s
        stepped = math.ceil(wanted / self.window_step_s - 1e-9) * self.window_step_s
        return int(min(self.chunk_seconds, max(self.window_floor_s, math.ceil(stepped))))

    def window_features(self, audio: np.ndarray, seconds: int | None = None) -> np.ndarray:
        """One window (``seconds`` long, 30 by default) -> ``[n_mels, seconds * 100]`` float32."""
        n_samples = self.n_samples if seconds is None else seconds * self.sample_rate
        padded = np.zeros(n_samples, dtype=np.float64)
        padded[: min(len(audio), n_samples)] = audio[:n_samples]
        half = self.n_fft // 2
        signal = np.pad(padded, (half, half), mode="reflect")
        n_frames = 1 + (len(signal) - self.n_fft) // self.hop
        idx = np.arange(self.n_fft)[None, :] + self.hop * np.arange(n_frames)[:, None]
        spectrum = np.fft.rfft(signal[idx] * self.window, n=self.n_fft, axis=1)
        power = (spectrum.real**2 + spectrum.imag**2).T  # [freq, frames]
        mel = np.maximum(1e-10, self.filters.T.astype(np.float64) @ power)
        log_spec = np.log10(mel)[:, :-1]
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
        return ((log_spec + 4.0) / 4.0).astype(np.float32)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Any length of 16 kHz mono audio -> ``[n_windows, n_mels, frames]``.

        Long audio: 30 s windows (3000 frames). A clip that fits in one window: one window
        sized by :meth:`window_seconds`.
        """
        windows = self.split(audio)
        if len(windows) == 1:
            return self.window_features(windows[0], self.window_seconds(len(windows[0])))[None]
        return np.stack([self.window_features(w) for w in windows])
