"""Writing audio files and muxing generated audio into the source video with FFmpeg."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import soundfile

# Codecs that MP4 carries natively; anything else is remuxed into Matroska, which carries every codec.
MP4_VIDEO_CODECS = {"h264", "hevc", "mpeg4", "av1", "vp9"}


class MuxError(RuntimeError):
    """FFmpeg could not write the dubbed video."""


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV of (channels, samples) float audio in [-1, 1]."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(audio, -1.0, 1.0).T, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def dubbed_container(video_codec: str | None) -> str:
    return "mp4" if (video_codec or "").lower() in MP4_VIDEO_CODECS else "mkv"


def mux_audio(
    *,
    video_path: Path,
    audio_path: Path,
    out_path: Path,
    start_sec: float,
    duration_sec: float,
    timeout_s: float = 600.0,
) -> Path:
    """Copy the video stream of the segment and add the new audio as AAC; the old audio is dropped.

    The audio is exactly the segment's duration, so every video frame is kept: no `-shortest`, which
    dropped the last frame whenever the audio ended a few milliseconds early.

    With stream copy FFmpeg can only cut at keyframes, so a segment that starts mid-video may begin up
    to one GOP early; the audio is aligned to the cut that FFmpeg makes.
    """
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-ss",
        f"{start_sec:.3f}",
        "-t",
        f"{duration_sec:.3f}",
        "-i",
        str(video_path),
        "-i",
        str(audio_path),
        "-map",
        "0:v:0",
        "-map",
        "1:a:0",
        "-c:v",
        "copy",
        "-c:a",
        "aac",
        "-b:a",
        "192k",
        str(out_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0 or not out_path.exists() or out_path.stat().st_size == 0:
        raise MuxError(f"ffmpeg failed to mux {video_path.name}: {result.stderr.strip()[-500:]}")
    return out_path
