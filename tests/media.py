"""Real test videos, made with the FFmpeg binary that imageio-ffmpeg ships."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg


def ffmpeg(*args: str) -> None:
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *args],
        check=True,
        capture_output=True,
        timeout=120,
    )


def make_video(
    path: Path,
    *,
    duration: float = 2.0,
    fps: int = 25,
    size: str = "96x64",
    codec: str = "libx264",
    with_audio: bool = False,
    pattern: str = "testsrc2",
) -> Path:
    """A synthetic moving test pattern (with a sine tone when `with_audio`)."""
    args = ["-f", "lavfi", "-i", f"{pattern}=size={size}:rate={fps}:duration={duration}"]
    if with_audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={duration}", "-c:a", "aac"]
    args += ["-c:v", codec, "-pix_fmt", "yuv420p"] if codec == "libx264" else ["-c:v", codec]
    ffmpeg(*args, str(path))
    return path


def make_audio_only(path: Path, *, duration: float = 1.0) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={duration}", "-c:a", "aac", str(path))
    return path


def truncate(source: Path, dest: Path, *, keep_fraction: float = 0.3) -> Path:
    data = source.read_bytes()
    dest.write_bytes(data[: int(len(data) * keep_fraction)])
    return dest
