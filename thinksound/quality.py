"""Audio quality checks and loudness normalisation (pure numpy; the pipeline decides what to do)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SILENCE_FRAME_SEC = 0.05
TRUE_PEAK_OVERSAMPLING = 4


@dataclass(frozen=True)
class QualityThresholds:
    duration_tolerance_sec: float = 0.05
    max_clipping_ratio: float = 0.01
    clipping_level: float = 0.999
    max_silence_ratio: float = 0.8
    silence_threshold_dbfs: float = -60.0
    min_loudness_lufs: float = -50.0
    max_true_peak_dbtp: float = -1.0


def _db(value: float) -> float:
    return 20.0 * math.log10(value) if value > 0 else -math.inf


def true_peak_dbtp(audio: np.ndarray, sample_rate: int) -> float:
    """Peak of the 4x oversampled signal (BS.1770 true peak), in dB relative to full scale."""
    from scipy.signal import resample_poly  # imported here: scipy.signal alone takes ~0.7 s to import

    oversampled = resample_poly(audio, TRUE_PEAK_OVERSAMPLING, 1, axis=-1)
    return _db(float(np.max(np.abs(oversampled))) if oversampled.size else 0.0)


def silence_ratio(audio: np.ndarray, sample_rate: int, threshold_dbfs: float) -> float:
    """Share of 50 ms frames whose RMS (over both channels) lies below the threshold."""
    frame = max(1, int(SILENCE_FRAME_SEC * sample_rate))
    usable = audio.shape[-1] // frame * frame
    if usable == 0:
        return 1.0
    frames = audio[:, :usable].reshape(audio.shape[0], -1, frame)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=(0, 2)))
    return float(np.mean(rms < 10 ** (threshold_dbfs / 20)))


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """EBU R128 integrated loudness in LUFS (-inf for silence or clips shorter than one gate block)."""
    if audio.shape[-1] < int(0.4 * sample_rate):
        return -math.inf
    import pyloudnorm  # imported here: it pulls in scipy.signal, which a fully cached rerun never needs

    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(audio.T.astype(np.float64)))


def measure(audio: np.ndarray, sample_rate: int, *, expected_duration_sec: float, thresholds: QualityThresholds):
    """Every metric the checks use, as plain floats. `audio` is (channels, samples) float."""
    finite = np.isfinite(audio)
    metrics = {
        "duration_sec": audio.shape[-1] / sample_rate,
        "duration_error_sec": abs(audio.shape[-1] / sample_rate - expected_duration_sec),
        "non_finite_ratio": float(1.0 - finite.mean()) if audio.size else 0.0,
    }
    if metrics["non_finite_ratio"] > 0:
        return metrics
    magnitude = np.abs(audio)
    metrics["peak_dbfs"] = _db(float(magnitude.max()) if audio.size else 0.0)
    metrics["clipping_ratio"] = float(np.mean(magnitude >= thresholds.clipping_level))
    metrics["silence_ratio"] = silence_ratio(audio, sample_rate, thresholds.silence_threshold_dbfs)
    metrics["loudness_lufs"] = integrated_loudness(audio, sample_rate)
    metrics["true_peak_dbtp"] = true_peak_dbtp(audio, sample_rate)
    return metrics


def failed_checks(metrics: dict[str, float], thresholds: QualityThresholds) -> list[str]:
    """Human-readable reasons for every check the metrics fail; empty when the audio passes."""
    if metrics["non_finite_ratio"] > 0:
        return [f"audio contains NaN or Inf ({metrics['non_finite_ratio']:.1%} of samples)"]
    reasons = []
    if metrics["duration_error_sec"] > thresholds.duration_tolerance_sec:
        reasons.append(
            f"duration {metrics['duration_sec']:.3f} s differs from the video by "
            f"{metrics['duration_error_sec']:.3f} s (tolerance {thresholds.duration_tolerance_sec} s)"
        )
    if metrics["clipping_ratio"] > thresholds.max_clipping_ratio:
        reasons.append(
            f"clipping: {metrics['clipping_ratio']:.2%} of samples at full scale "
            f"(max {thresholds.max_clipping_ratio:.2%})"
        )
    if metrics["silence_ratio"] > thresholds.max_silence_ratio:
        reasons.append(
            f"silence: {metrics['silence_ratio']:.0%} of the clip is below "
            f"{thresholds.silence_threshold_dbfs} dBFS (max {thresholds.max_silence_ratio:.0%})"
        )
    if metrics["loudness_lufs"] < thresholds.min_loudness_lufs:
        reasons.append(
            f"too quiet: {metrics['loudness_lufs']:.1f} LUFS (min {thresholds.min_loudness_lufs} LUFS)"
        )
    if metrics["true_peak_dbtp"] > thresholds.max_true_peak_dbtp:
        reasons.append(
            f"true peak {metrics['true_peak_dbtp']:.1f} dBTP above {thresholds.max_true_peak_dbtp} dBTP"
        )
    return reasons


def badness(metrics: dict[str, float], thresholds: QualityThresholds) -> tuple[int, float]:
    """Ordering key among regenerations: fewer failed checks first, then less clipping and silence."""
    if metrics["non_finite_ratio"] > 0:
        return (100, math.inf)
    return (
        len(failed_checks(metrics, thresholds)),
        metrics["clipping_ratio"] + metrics["silence_ratio"],
    )


def normalize_loudness(
    audio: np.ndarray,
    sample_rate: int,
    *,
    target_lufs: float,
    max_true_peak_dbtp: float,
    measured: dict[str, float] | None = None,
) -> tuple[np.ndarray, float]:
    """Gain the audio to the loudness target, backing off where that would push the true peak too high.

    `measured` may carry this audio's `loudness_lufs` and `true_peak_dbtp` (from `measure`) to spare
    computing them again. Returns the new audio and the gain applied in dB. Silent audio is returned
    unchanged.
    """
    if measured is None:
        measured = {
            "loudness_lufs": integrated_loudness(audio, sample_rate),
            "true_peak_dbtp": true_peak_dbtp(audio, sample_rate),
        }
    gain_db = loudness_gain_db(measured, target_lufs=target_lufs, max_true_peak_dbtp=max_true_peak_dbtp)
    if gain_db == 0.0:
        return audio, 0.0
    return (audio * 10 ** (gain_db / 20)).astype(audio.dtype), gain_db


def loudness_gain_db(measured: dict[str, float], *, target_lufs: float, max_true_peak_dbtp: float) -> float:
    """The gain (dB) that brings audio of the measured loudness and true peak to the loudness target,
    backing off where the true peak would pass its limit; 0 for silent audio."""
    loudness = measured.get("loudness_lufs")
    if loudness is None or not math.isfinite(loudness):
        return 0.0
    return min(target_lufs - loudness, max_true_peak_dbtp - measured["true_peak_dbtp"])


def measure_after_gain(
    measured: dict[str, float],
    gained: np.ndarray,
    sample_rate: int,
    *,
    gain_db: float,
    thresholds: QualityThresholds,
) -> dict[str, float]:
    """`measure` of audio that differs from measured audio by a pure gain.

    Loudness, peak and true peak are level-equivariant, so they shift by the gain exactly; only the
    threshold-based ratios are counted again.
    """
    metrics = dict(measured)
    for name in ("peak_dbfs", "loudness_lufs", "true_peak_dbtp"):
        metrics[name] = measured[name] + gain_db
    metrics["clipping_ratio"] = float(np.mean(np.abs(gained) >= thresholds.clipping_level))
    metrics["silence_ratio"] = silence_ratio(gained, sample_rate, thresholds.silence_threshold_dbfs)
    return metrics
