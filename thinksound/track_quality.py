"""The quality metrics and the loudness gain of a track on disk, computed a chunk at a time.

Each function here gives what its whole-array counterpart in ``thinksound.quality`` (and
``thinksound.qc.frontend.resample``) gives for the track loaded at once, to float rounding, while
holding a few seconds of audio: the K-weighting filters carry their state from chunk to chunk, the
400 ms loudness blocks are summed over the same samples, and the polyphase resamplers see enough
neighbouring samples at each chunk's edges that the chunk's output is the whole signal's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from thinksound.quality import (
    SILENCE_FRAME_SEC,
    TRUE_PEAK_OVERSAMPLING,
    QualityThresholds,
    _db,
)
from thinksound.track_file import TrackFile

# Samples per chunk, in 50 ms silence frames (10 s at 44.1 kHz): a chunk is a whole number of frames.
CHUNK_FRAMES = 200
# Input samples read on each side of a chunk for the polyphase filters (theirs reach 10 and 28).
RESAMPLE_CONTEXT = 64

# BS.1770 gating (pyloudnorm's defaults, which `integrated_loudness` uses).
_BLOCK_SEC, _STEP = 0.4, 0.25
_ABSOLUTE_GATE_LUFS = -70.0
_CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)


def _frame(sample_rate: int) -> int:
    return max(1, int(SILENCE_FRAME_SEC * sample_rate))


def _chunks(track: TrackFile, sample_rate: int) -> Iterator[tuple[int, np.ndarray]]:
    return track.chunks(_frame(sample_rate) * CHUNK_FRAMES)


class _SilenceCounter:
    """Counts 50 ms frames (over both channels) below a level; chunks must be whole frames but the last."""

    def __init__(self, sample_rate: int, threshold_dbfs: float) -> None:
        self.frame, self.level = _frame(sample_rate), 10 ** (threshold_dbfs / 20)
        self.frames = self.silent = 0

    def add(self, chunk: np.ndarray) -> None:
        usable = chunk.shape[-1] // self.frame * self.frame
        frames = chunk[:, :usable].reshape(chunk.shape[0], -1, self.frame)
        rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=(0, 2)))
        self.frames += rms.size
        self.silent += int(np.count_nonzero(rms < self.level))

    @property
    def ratio(self) -> float:
        return self.silent / self.frames if self.frames else 1.0


class _LoudnessMeter:
    """EBU R128 integrated loudness as pyloudnorm's K-weighting meter measures it, fed chunk by chunk."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        import pyloudnorm  # noqa: PLC0415 - it pulls in scipy.signal
        from scipy.signal import lfilter_zi  # noqa: PLC0415

        self.rate, self.channels = sample_rate, channels
        stages = pyloudnorm.Meter(sample_rate)._filters.values()
        self.stages = [(f.b, f.a, f.passband_gain) for f in stages]
        self.state = [np.zeros((channels, len(lfilter_zi(b, a)))) for b, a, _ in self.stages]
        self.filtered = np.empty((0, channels))  # the K-weighted samples not yet behind every block
        self.offset = 0  # track position of self.filtered[0]
        self.z: list[np.ndarray] = []  # per block, each channel's mean square
        self.next_block = 0

    def _bounds(self, j: int) -> tuple[int, int]:
        return int(_BLOCK_SEC * (j * _STEP) * self.rate), int(_BLOCK_SEC * (j * _STEP + 1) * self.rate)

    def add(self, chunk: np.ndarray, *, last: bool) -> None:
        from scipy.signal import lfilter  # noqa: PLC0415

        data = chunk.T.astype(np.float64)  # (n, channels)
        for n, (b, a, gain) in enumerate(self.stages):
            data, self.state[n] = lfilter(b, a, data, axis=0, zi=self.state[n].T)
            self.state[n] = self.state[n].T
            data = gain * data
        self.filtered = np.concatenate([self.filtered, data])
        end = self.offset + self.filtered.shape[0]
        while True:
            lo, hi = self._bounds(self.next_block)
            if (hi > end and not last) or self.next_block >= self.blocks(end) and last:
                break
            block = self.filtered[lo - self.offset : hi - self.offset]
            self.z.append(np.array([np.sum(np.square(block[:, c])) for c in range(self.channels)]))
            self.next_block += 1
        keep = self._bounds(self.next_block)[0]
        self.filtered = self.filtered[max(0, keep - self.offset) :]
        self.offset = max(self.offset, keep)

    def blocks(self, samples: int) -> int:
        return int(np.round((samples / self.rate - _BLOCK_SEC) / (_BLOCK_SEC * _STEP))) + 1

    def integrated(self) -> float:
        z = (1.0 / (_BLOCK_SEC * self.rate)) * np.stack(self.z, axis=1)  # (channels, blocks)
        gains = np.array(_CHANNEL_GAINS[: self.channels])[:, None]
        with warnings.catch_warnings(), np.errstate(divide="ignore"):
            warnings.simplefilter("ignore", category=RuntimeWarning)
            loudness = -0.691 + 10.0 * np.log10(np.sum(gains * z, axis=0))
            gated = z[:, loudness >= _ABSOLUTE_GATE_LUFS]
            relative = -0.691 + 10.0 * np.log10(np.sum(gains[:, 0] * np.mean(gated, axis=1))) - 10.0
            kept = z[:, (loudness > relative) & (loudness > _ABSOLUTE_GATE_LUFS)]
            mean = np.nan_to_num(np.mean(kept, axis=1))
            return float(-0.691 + 10.0 * np.log10(np.sum(gains[:, 0] * mean)))


def _resampled(
    track: TrackFile, sample_rate: int, up: int, down: int, *, mono: bool, dtype: type = np.float32
) -> Iterator[np.ndarray]:
    """The track (or its channel mean) as `dtype`, resampled by up/down as scipy's resample_poly of the
    whole track, chunk by chunk."""
    from scipy.signal import resample_poly  # noqa: PLC0415

    step = _frame(sample_rate) * CHUNK_FRAMES // down * down
    context = -(-RESAMPLE_CONTEXT // down) * down
    for start in range(0, track.length, step):
        stop = min(track.length, start + step)
        lo, hi = max(0, start - context), min(track.length, stop + context)
        part = track.read(lo, hi)
        part = part.mean(axis=0) if mono else part
        out = resample_poly(part.astype(dtype), up, down, axis=-1)
        first = (start - lo) * up // down
        yield out[..., first : first + math.ceil((stop - start) * up / down)]


def resample_mono(track: TrackFile, sample_rate: int, target_rate: int) -> np.ndarray:
    """`frontend.resample(to_mono(audio), sample_rate, target_rate)` of the whole track, as float32."""
    ratio = Fraction(target_rate, sample_rate)
    up, down = ratio.numerator, ratio.denominator
    pieces = [p.astype(np.float32) for p in _resampled(track, sample_rate, up, down, mono=True, dtype=np.float64)]
    out = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    return out[: math.floor(track.length * target_rate / sample_rate)]


def measure_track(
    track: TrackFile, sample_rate: int, *, expected_duration_sec: float, thresholds: QualityThresholds
) -> dict[str, float]:
    """`thinksound.quality.measure` of the track, reading it a chunk at a time."""
    size = track.size
    metrics = {
        "duration_sec": track.length / sample_rate,
        "duration_error_sec": abs(track.length / sample_rate - expected_duration_sec),
    }
    finite = peak = clipped = 0
    silence = _SilenceCounter(sample_rate, thresholds.silence_threshold_dbfs)
    gated = track.length >= int(0.4 * sample_rate)
    meter = _LoudnessMeter(sample_rate, track.channels) if gated else None
    for start, chunk in _chunks(track, sample_rate):
        finite += int(np.count_nonzero(np.isfinite(chunk)))
        magnitude = np.abs(chunk)
        peak = max(peak, float(magnitude.max(initial=0.0)))
        clipped += int(np.count_nonzero(magnitude >= thresholds.clipping_level))
        silence.add(chunk)
        if meter is not None:
            meter.add(chunk, last=start + chunk.shape[-1] >= track.length)
    metrics["non_finite_ratio"] = float(1.0 - finite / size) if size else 0.0
    if metrics["non_finite_ratio"] > 0:
        return metrics
    metrics["peak_dbfs"] = _db(peak)
    metrics["clipping_ratio"] = clipped / size if size else math.nan
    metrics["silence_ratio"] = silence.ratio
    metrics["loudness_lufs"] = meter.integrated() if meter is not None else -math.inf
    up = TRUE_PEAK_OVERSAMPLING
    oversampled = _resampled(track, sample_rate, up, 1, mono=False)
    true_peak = max((float(np.max(np.abs(p), initial=0.0)) for p in oversampled), default=0.0)
    metrics["true_peak_dbtp"] = _db(true_peak)
    return metrics


def write_gained_wav(
    track: TrackFile,
    sample_rate: int,
    wav_path: Path,
    *,
    gain_db: float,
    measured: dict[str, float],
    thresholds: QualityThresholds,
) -> dict[str, float]:
    """Write the track times the gain as 16-bit PCM WAV (clipped to [-1, 1], libsndfile's conversion)
    and return `quality.measure_after_gain` of it, one chunk at a time."""
    import soundfile  # noqa: PLC0415

    metrics = dict(measured)
    for name in ("peak_dbfs", "loudness_lufs", "true_peak_dbtp"):
        metrics[name] = measured[name] + gain_db
    scale = 10 ** (gain_db / 20)
    clipped = 0
    silence = _SilenceCounter(sample_rate, thresholds.silence_threshold_dbfs)
    with soundfile.SoundFile(wav_path, "w", sample_rate, track.channels, subtype="PCM_16", format="WAV") as wav:
        for _, chunk in _chunks(track, sample_rate):
            gained = (chunk * scale).astype(chunk.dtype)
            clipped += int(np.count_nonzero(np.abs(gained) >= thresholds.clipping_level))
            silence.add(gained)
            wav.write(np.clip(gained, -1.0, 1.0).T)
    metrics["clipping_ratio"] = clipped / track.size if track.size else math.nan
    metrics["silence_ratio"] = silence.ratio
    return metrics
