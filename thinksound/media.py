"""Muxing generated audio into the source video with FFmpeg (the WAV is written by ``track_quality``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg

# Codecs copied as they are into the dubbed MP4, which browsers play. Anything else (MPEG-4 Part 2,
# which MP4 carries but browsers show without a picture, ProRes, MJPEG, VP8, ...) is re-encoded to H.264.
BROWSER_MP4_CODECS = {"h264", "hevc", "av1", "vp9"}
DUBBED_CONTAINER = "mp4"
REENCODE_ARGS = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p")


class MuxError(RuntimeError):
    """FFmpeg could not write the dubbed video."""


def needs_reencode(video_codec: str | None) -> bool:
    """Whether the dubbed video must be re-encoded to H.264 for browsers to show its picture."""
    return (video_codec or "").lower() not in BROWSER_MP4_CODECS


def mux_audio(
    *,
    video_path: Path,
    audio_path: Path,
    out_path: Path,
    start_sec: float,
    duration_sec: float,
    reencode: bool = False,
    timeout_s: float = 600.0,
) -> Path:
    """Copy (or, with `reencode`, encode to H.264) the video stream of the segment and add the new audio
    as AAC; the old audio is dropped.

    The audio is exactly the segment's duration, so every video frame is kept: no `-shortest`, which
    dropped the last frame whenever the audio ended a few milliseconds early.

    With stream copy FFmpeg can only cut at keyframes, so a segment that starts mid-video may begin up
    to one GOP early; the audio is aligned to the cut that FFmpeg makes. Re-encoding keeps each source
    frame with its timestamp (no frame rate conversion).
    """
    video_args = [*REENCODE_ARGS, "-fps_mode", "passthrough"] if reencode else ["-c:v", "copy"]
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
        *video_args,
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
