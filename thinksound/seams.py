"""Checks of a joined track at its window seams and over each window (pure numpy)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Each side of a seam is judged by the RMS level of this much audio just outside its fade.
SEAM_SPAN_SEC = 0.1


def _rms_db(audio: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if audio.size else 0.0
    return 20.0 * math.log10(max(rms, 1e-10))


def seam_jumps_db(
    audio: np.ndarray,
    sample_rate: int,
    fades: Sequence[tuple[float, float]],
    *,
    span_sec: float = SEAM_SPAN_SEC,
) -> list[float]:
    """The level jump at each seam: RMS (dB) of the `span_sec` after its fade minus that of the
    `span_sec` before it. `audio` is (channels, samples); `fades` are (start, end) in seconds."""
    span = max(1, round(span_sec * sample_rate))
    jumps = []
    for start, end in fades:
        a, b = round(start * sample_rate), round(end * sample_rate)
        before = audio[:, max(0, a - span) : a]
        after = audio[:, b : b + span]
        jumps.append(_rms_db(after) - _rms_db(before) if before.size and after.size else 0.0)
    return jumps


def window_silence_ratios(
    audio: np.ndarray, sample_rate: int, ranges: Sequence[tuple[float, float]], *, threshold_dbfs: float
) -> list[float]:
    """Share of 50 ms frames below `threshold_dbfs` within each (start, end) second range."""
    frame = max(1, int(0.05 * sample_rate))
    ratios = []
    for start, end in ranges:
        part = audio[:, round(start * sample_rate) : round(end * sample_rate)]
        usable = part.shape[-1] // frame * frame
        if usable == 0:
            ratios.append(1.0)
            continue
        frames = part[:, :usable].reshape(part.shape[0], -1, frame).astype(np.float64)
        rms = np.sqrt(np.mean(frames**2, axis=(0, 2)))
        ratios.append(float(np.mean(~np.isfinite(rms) | (rms < 10 ** (threshold_dbfs / 20)))))
    return ratios
