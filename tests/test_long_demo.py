"""The demo's side of long videos: its default limit and the windows drawn on the spectrogram."""

from __future__ import annotations

import numpy as np
import soundfile

from flows.demo_input import UploadLimits
from flows.demo_spectrogram import spectrogram_image


def test_demo_accepts_two_minutes_by_default() -> None:
    assert UploadLimits().max_duration_sec == 120.0


def test_spectrogram_shows_each_window(tmp_path) -> None:
    path = tmp_path / "a.wav"
    noise = np.random.default_rng(0).standard_normal((12 * 8000, 2)) * 0.1
    soundfile.write(path, noise, 8000)
    plain = spectrogram_image(path, width=240)
    marked = spectrogram_image(path, width=240, windows=[(0.0, 9.0), (3.0, 12.0)])
    assert marked.height == plain.height + 28
    pixels = np.asarray(marked)
    strip = pixels[plain.height :]
    first, second = strip[7], strip[14 + 7]  # the middle of each window's row
    blue, green = np.array([30, 110, 200]), np.array([0, 150, 110])
    # Window 0 spans 0-9 s (x 0-180), window 1 spans 3-12 s (x 60-239): each bar where its window is.
    assert (first[20:170] == blue).all(axis=1).mean() > 0.8 and (first[200:] == blue).all(axis=1).sum() == 0
    assert (second[80:230] == green).all(axis=1).mean() > 0.8 and (second[:50] == green).all(
        axis=1
    ).sum() == 0
    # Window 1's start is marked by a dashed line across the picture.
    assert (pixels[: plain.height - 18, 60] == green).all(axis=1).sum() > 10
