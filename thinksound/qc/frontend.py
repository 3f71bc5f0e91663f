"""Audio front ends shared by the QC models: resampling, and Synchformer's log-mel segments.

Synchformer's audio branch sees 16 kHz mono cut into 0.64 s segments (10240 samples) every 0.32 s
(5120 samples), the same layout as its visual segments (16 frames every 8 at 25 fps). Each segment
becomes a 128-bin log-mel spectrogram of 66 frames (65 computed, one zero column appended), normalised
with the AudioSet statistics the model was trained with, exactly as av-benchmark prepares it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited polyphase resampling along the last axis (Kaiser-windowed FIR, anti-aliased)."""
    from scipy.signal import resample_poly  # noqa: PLC0415 - scipy.signal takes ~0.7 s to import

    if source_rate == target_rate:
        return audio.astype(np.float32, copy=False)
    ratio = Fraction(target_rate, source_rate)
    out = resample_poly(audio.astype(np.float64), ratio.numerator, ratio.denominator, axis=-1)
    length = math.floor(audio.shape[-1] * target_rate / source_rate)
    return out[..., :length].astype(np.float32)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """(channels, samples) or (samples,) -> (samples,), the channel mean."""
    return audio if audio.ndim == 1 else audio.mean(axis=0)


@dataclass(frozen=True)
class SyncMelConfig:
    """torchaudio ``MelSpectrogram(16000, n_fft=1024, win_length=400, hop_length=160, n_mels=128)``."""

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float = 8000.0
    segment_samples: int = 10240
    segment_hop: int = 5120
    frames: int = 66
    log_floor: float = 1e-6
    mean: float = -4.2677393
    std: float = 4.5689974

    def num_segments(self, samples: int) -> int:
        if samples < self.segment_samples:
            return 0
        return (samples - self.segment_samples) // self.segment_hop + 1


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(cfg: SyncMelConfig) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) triangular HTK-scale filters without area normalisation (on CPU)."""
    cpu64 = {"dtype": torch.float64, "device": "cpu"}
    freqs = torch.linspace(0, cfg.sample_rate // 2, cfg.n_fft // 2 + 1, **cpu64)
    m_min, m_max = _hz_to_mel(torch.tensor([cfg.f_min, cfg.f_max], **cpu64)).tolist()
    m = torch.linspace(m_min, m_max, cfg.n_mels + 2, **cpu64)
    edges = _mel_to_hz(m)
    widths = edges[1:] - edges[:-1]
    slopes = edges.unsqueeze(0) - freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0).float()


class SyncMel:
    """(B, samples) 16 kHz mono -> (B, S, 128, 66) normalised log-mel segments, always in float32.

    Not an ``nn.Module`` on purpose: a model's ``.to(bfloat16)`` must not round the window and filters.
    """

    def __init__(self, cfg: SyncMelConfig | None = None) -> None:
        self.cfg = cfg or SyncMelConfig()
        self.window = torch.hann_window(self.cfg.win_length, device="cpu")
        self.filters = mel_filterbank(self.cfg)

    def segments(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, S, 10240) with hop 5120."""
        c = self.cfg
        if c.num_segments(audio.shape[-1]) < 1:
            raise ValueError(f"need at least {c.segment_samples} samples, got {audio.shape=}")
        return audio.unfold(-1, c.segment_samples, c.segment_hop)

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        segs = self.segments(audio.float())
        b, s, n = segs.shape
        spec = torch.stft(
            segs.reshape(b * s, n),
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            win_length=c.win_length,
            window=self.window.to(segs.device),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        ).abs().pow(2)  # (B*S, n_freqs, 65)
        mel = torch.matmul(spec.transpose(1, 2), self.filters.to(spec.device)).transpose(1, 2)  # (B*S, 128, 65)
        mel = torch.log(mel + c.log_floor)
        if mel.shape[-1] < c.frames:
            mel = torch.nn.functional.pad(mel, (0, c.frames - mel.shape[-1]), value=0.0)
        mel = mel[..., : c.frames]
        return ((mel - c.mean) / (2 * c.std)).view(b, s, c.n_mels, c.frames)
