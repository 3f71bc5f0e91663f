"""Tracks on disk, read a chunk at a time, give what the whole-array code gives for the track in memory."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
import torch

from thinksound import peak_normalize
from thinksound.qc.frontend import resample, to_mono
from thinksound.quality import QualityThresholds, measure, measure_after_gain, normalize_loudness
from thinksound.track_file import TrackFile, TrackWriter
from thinksound.track_quality import measure_track, resample_mono, write_gained_wav

SR = 44_100
LIMITS = QualityThresholds()


def _track(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise with a near-silent stretch and a clipped burst: every metric has something to count."""
    n = round(seconds * SR)
    audio = np.random.default_rng(seed).standard_normal((2, n)).astype(np.float32) * 0.1
    audio[:, n // 3 : n // 2] *= 1e-4
    audio[:, 1000:3000] = 1.0
    return audio / np.abs(audio).max()


def _write(path, audio: np.ndarray, piece: int = 12_345) -> TrackFile:
    with TrackWriter(path, channels=audio.shape[0], length=audio.shape[1]) as writer:
        for start in range(0, audio.shape[1], piece):
            writer.write(audio[:, start : start + piece])
    return TrackFile(path)


def test_track_file_reads_spans_and_loads_as_the_array(tmp_path) -> None:
    audio = _track(0.5)
    track = _write(tmp_path / "t.npy", audio)
    assert np.array_equal(np.load(tmp_path / "t.npy"), audio) and track.shape == audio.shape
    assert np.array_equal(track[:, 100:5000], audio[:, 100:5000])
    assert np.array_equal(track[:, audio.shape[1] - 10 : audio.shape[1] + 50], audio[:, -10:])
    np.save(tmp_path / "c.npy", audio)  # C order, as np.save writes it
    assert np.array_equal(TrackFile(tmp_path / "c.npy")[:, 7:900], audio[:, 7:900])
    with pytest.raises(ValueError, match="closed after"), TrackWriter(tmp_path / "x.npy", channels=2, length=10) as w:
        w.write(audio[:, :5])


@pytest.mark.parametrize("seconds", [0.3, 23.7])
def test_streamed_metrics_gain_and_wav_equal_the_whole_arrays(tmp_path, seconds: float) -> None:
    """23.7 s spans three 10 s chunks; 0.3 s is shorter than one loudness block."""
    audio = _track(seconds)
    track = _write(tmp_path / "t.npy", audio)
    measured = measure(audio, SR, expected_duration_sec=seconds, thresholds=LIMITS)
    assert measure_track(track, SR, expected_duration_sec=seconds, thresholds=LIMITS) == measured
    assert np.array_equal(resample_mono(track, SR, 16_000), resample(to_mono(audio), SR, 16_000))
    gained, gain_db = normalize_loudness(audio, SR, target_lufs=-23.0, max_true_peak_dbtp=-1.0, measured=measured)
    final = write_gained_wav(
        track, SR, tmp_path / "o.wav", gain_db=gain_db, measured=measured, thresholds=LIMITS
    )
    assert final == measure_after_gain(measured, gained, SR, gain_db=gain_db, thresholds=LIMITS)
    whole = io.BytesIO()
    soundfile.write(whole, np.clip(gained, -1.0, 1.0).T, SR, format="WAV", subtype="PCM_16")
    assert (tmp_path / "o.wav").read_bytes() == whole.getvalue()


def test_a_candidate_is_written_peak_normalised_and_cut(tmp_path) -> None:
    from tasks.synthesis import write_candidate
    from thinksound.config import TINY
    from thinksound.windows import plan_windows

    plan = plan_windows(TINY, 12.0)
    raw = torch.randn((2, plan.track_len * plan.hop), generator=torch.Generator().manual_seed(4)) * 3
    length = 12 * SR
    path = write_candidate(raw.split(50_000, dim=-1), plan, length, tmp_path)
    expected = peak_normalize(raw[None])[0][:, :length].numpy()
    assert np.array_equal(np.load(path), expected)
    assert list(tmp_path.iterdir()) == [path], "the raw pass is removed"
