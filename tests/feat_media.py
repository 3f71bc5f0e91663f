"""Videos for the feature-extraction tests, generated with imageio-ffmpeg's static FFmpeg binary."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np


def ffmpeg(*args: str) -> bytes:
    return subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *args],
        check=True,
        capture_output=True,
        timeout=120,
    ).stdout


def make_testsrc(path: Path, *, size: str, rate: float, duration: float, codec_args: list[str], vf: str = "") -> Path:
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={duration}"]
    if vf:
        args += ["-vf", vf, "-fps_mode", "passthrough"]
    ffmpeg(*args, *codec_args, str(path))
    return path


def ffmpeg_fps_frames(path: Path, *, fps: int, width: int, height: int) -> np.ndarray:
    """What `ffmpeg -copyts -i path -vf fps=N` outputs, as rgb24 frames (T, H, W, 3)."""
    # -copyts: keep the stream's own timestamps, as torio (and we) feed them to the filter
    raw = ffmpeg("-copyts", "-i", str(path), "-vf", f"fps={fps}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-")
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


VIDEOS = {
    # name: (size, rate, duration, codec args, extra filter)
    "h264.mp4": ("176x96", 30, 3.0, ["-c:v", "libx264", "-pix_fmt", "yuv420p"], ""),
    "vp9.webm": ("128x96", 24, 2.0, ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"], ""),
    "mjpeg.avi": ("160x120", 25, 2.0, ["-c:v", "mjpeg"], ""),
    "h264.mkv": ("160x90", 23.976, 2.0, ["-c:v", "libx264", "-pix_fmt", "yuv420p"], ""),
    # MPEG-TS: non-zero start time, and seeking is approximate
    "h264.ts": ("128x72", 25, 3.0, ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mpegts"], ""),
    "mpeg4.mov": ("144x108", 15, 2.0, ["-c:v", "mpeg4"], ""),
    # testsrc2 rounds sizes to even; scale afterwards for a truly odd frame (4:4:4 allows odd sizes)
    "odd.mkv": ("176x96", 25, 1.5, ["-c:v", "libx264", "-pix_fmt", "yuv444p"], "scale=175:97"),
    "portrait.mp4": ("96x176", 30, 1.5, ["-c:v", "libx264", "-pix_fmt", "yuv420p"], ""),
    "fps60.mp4": ("128x72", 60, 1.2, ["-c:v", "libx264", "-pix_fmt", "yuv420p"], ""),
    # 1 s at 30 fps, then about 11 fps: variable frame rate
    "vfr.mp4": (
        "128x72",
        30,
        2.5,
        ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
        "setpts='if(lt(N,30),N/30,1+(N-30)/11.3)/TB'",
    ),
}


def make_all(root: Path) -> dict[str, Path]:
    out = {}
    for name, (size, rate, duration, codec, vf) in VIDEOS.items():
        out[name] = make_testsrc(root / name, size=size, rate=rate, duration=duration, codec_args=codec, vf=vf)
    return out
