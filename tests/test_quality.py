"""Audio checks and loudness normalisation on real signals (noise, tones, silence, clipping)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from thinksound.quality import (
    QualityThresholds,
    failed_checks,
    integrated_loudness,
    measure,
    measure_after_gain,
    normalize_loudness,
)

SR = 44100
LIMITS = QualityThresholds()


def _noise(seconds: float = 2.0, level: float = 0.1, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((2, int(SR * seconds))) * level).astype(np.float32)


def test_normalisation_reaches_the_target_and_shifted_metrics_equal_a_fresh_measure():
    audio = _noise(level=0.01)
    measured = measure(audio, SR, expected_duration_sec=2.0, thresholds=LIMITS)
    gained, gain_db = normalize_loudness(audio, SR, target_lufs=-23.0, max_true_peak_dbtp=-1.0, measured=measured)
    assert integrated_loudness(gained, SR) == pytest.approx(-23.0, abs=0.05)
    fresh = measure(gained, SR, expected_duration_sec=2.0, thresholds=LIMITS)
    shifted = measure_after_gain(measured, gained, SR, gain_db=gain_db, thresholds=LIMITS)
    for name, value in fresh.items():
        assert shifted[name] == pytest.approx(value, abs=0.02), name


def test_true_peak_ceiling_wins_over_the_loudness_target():
    audio = _noise(level=0.001)
    audio[:, 1000] = 0.5  # one spike: reaching -10 LUFS would push it far over full scale
    gained, gain_db = normalize_loudness(audio, SR, target_lufs=-10.0, max_true_peak_dbtp=-1.0)
    after = measure(gained, SR, expected_duration_sec=2.0, thresholds=LIMITS)
    assert after["true_peak_dbtp"] == pytest.approx(-1.0, abs=0.05)
    assert after["loudness_lufs"] < -10.5


def test_each_check_fails_with_a_reason():
    silent = np.zeros((2, SR * 2), dtype=np.float32)
    reasons = failed_checks(measure(silent, SR, expected_duration_sec=2.0, thresholds=LIMITS), LIMITS)
    assert any("silence" in r for r in reasons) and any("too quiet" in r for r in reasons)

    clipped = np.clip(_noise(level=2.0), -1, 1)
    reasons = failed_checks(measure(clipped, SR, expected_duration_sec=2.0, thresholds=LIMITS), LIMITS)
    assert any("clipping" in r for r in reasons)

    short = _noise(seconds=1.0)
    reasons = failed_checks(measure(short, SR, expected_duration_sec=2.0, thresholds=LIMITS), LIMITS)
    assert any("duration" in r for r in reasons)

    broken = _noise()
    broken[0, 10] = math.nan
    assert failed_checks(measure(broken, SR, expected_duration_sec=2.0, thresholds=LIMITS), LIMITS)[0].startswith(
        "audio contains NaN"
    )


def test_silence_is_left_alone():
    silent = np.zeros((2, SR), dtype=np.float32)
    out, gain_db = normalize_loudness(silent, SR, target_lufs=-23.0, max_true_peak_dbtp=-1.0)
    assert gain_db == 0.0 and not out.any()
