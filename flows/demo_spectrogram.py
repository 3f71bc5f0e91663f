"""A log-magnitude spectrogram picture of an audio file, for the web demo (numpy and PIL only)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image, ImageDraw

# Anchor colours of a dark-to-bright ramp (black, purple, red, orange, pale yellow), like 'magma'.
_RAMP = np.array(
    [[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]],
    dtype=np.float64,
)
_AXIS_HEIGHT = 18
_WINDOW_ROW = 14
_WINDOW_COLOURS = ((30, 110, 200), (0, 150, 110))


def _colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to (…, 3) uint8 colours along the ramp."""
    position = np.clip(values, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    frac = (position - low)[..., None]
    return np.round(_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).astype(np.uint8)


def log_spectrogram(mono: np.ndarray, *, n_fft: int = 2048, hop: int = 512) -> np.ndarray:
    """(frequency bins, frames) magnitude in dB, Hann-windowed STFT; at least one frame."""
    if mono.ndim != 1:
        raise ValueError(f"expected mono audio, got {mono.shape=}")
    if len(mono) < n_fft:
        mono = np.pad(mono, (0, n_fft - len(mono)))
    frames = 1 + (len(mono) - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spectrum = np.abs(np.fft.rfft(mono[index] * np.hanning(n_fft), axis=1))  # (frames, bins)
    return 20.0 * np.log10(np.maximum(spectrum.T, 1e-10))


def spectrogram_image(
    audio_path: str | Path,
    *,
    width: int = 800,
    height: int = 256,
    dynamic_range_db: float = 80.0,
    windows: Sequence[tuple[float, float]] = (),
) -> Image.Image:
    """The spectrogram of the file's channel mean: time left to right, frequency bottom to top.

    A strip below the picture marks every second, so a viewer can line sound up with the video. With
    `windows` ((start, end) seconds of each generation window), two more rows show them as bars,
    alternating rows so that overlaps stay visible, and dashed lines mark each window's start.
    """
    audio, sample_rate = soundfile.read(str(audio_path), dtype="float64", always_2d=True)
    db = log_spectrogram(audio.mean(axis=1))
    top = db.max()
    normalised = (db - (top - dynamic_range_db)) / dynamic_range_db
    pixels = _colormap(normalised[::-1])  # low frequencies at the bottom
    picture = Image.fromarray(pixels, mode="RGB").resize((width, height), Image.Resampling.BILINEAR)

    strip = _WINDOW_ROW * 2 if len(windows) > 1 else 0
    canvas = Image.new("RGB", (width, height + _AXIS_HEIGHT + strip), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    duration = len(audio) / sample_rate
    for second in range(int(duration) + 1):
        x = min(width - 1, round(second / max(duration, 1e-9) * width))
        draw.line([(x, height), (x, height + 4)], fill=(0, 0, 0))
        draw.text((min(x + 2, width - 24), height + 4), f"{second}s", fill=(0, 0, 0))
    draw.text((4, 4), f"0-{sample_rate // 2000} kHz, {dynamic_range_db:.0f} dB range", fill=(255, 255, 255))
    if strip:
        _draw_windows(draw, windows, duration=duration, width=width, top=height + _AXIS_HEIGHT, height=height)
    return canvas


def _draw_windows(
    draw: ImageDraw.ImageDraw, windows, *, duration: float, width: int, top: int, height: int
) -> None:
    def x(seconds: float) -> int:
        return min(width - 1, round(seconds / max(duration, 1e-9) * width))

    for index, (start, end) in enumerate(windows):
        row = top + (index % 2) * _WINDOW_ROW
        colour = _WINDOW_COLOURS[index % 2]
        draw.rectangle([(x(start), row + 1), (x(end), row + _WINDOW_ROW - 2)], fill=colour)
        draw.text((x(start) + 2, row + 1), f"w{index}", fill=(255, 255, 255))
        if index:
            for y in range(0, height, 8):
                draw.line([(x(start), y), (x(start), y + 3)], fill=colour)
