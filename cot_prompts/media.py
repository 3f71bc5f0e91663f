"""Turning a video (segment) into what the MLLM receives: sampled JPEG frames or the clip itself."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import av
from PIL import Image


@dataclass(frozen=True)
class SampledFrames:
    times_sec: tuple[float, ...]  # relative to the segment start
    jpegs: tuple[bytes, ...]


def frame_times(duration_sec: float, n_frames: int) -> list[float]:
    """Centres of n equal slices: never the very first or last frame, which are often black or cut."""
    if n_frames < 1 or duration_sec <= 0:
        raise ValueError(f"{n_frames=} and {duration_sec=} must be positive")
    return [duration_sec * (i + 0.5) / n_frames for i in range(n_frames)]


def _to_jpeg(image: Image.Image, *, max_side: int, quality: int) -> bytes:
    image = image.convert("RGB")
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def sample_frames(
    path: Path,
    *,
    start_sec: float,
    duration_sec: float,
    n_frames: int,
    max_side: int = 448,
    quality: int = 85,
) -> SampledFrames:
    """Decode once, front to back, and keep the first frame at or after each target time."""
    targets = frame_times(duration_sec, n_frames)
    jpegs: list[bytes] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        last = None
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            last = frame
            while len(jpegs) < len(targets) and frame.time - start_sec >= targets[len(jpegs)]:
                jpegs.append(_to_jpeg(frame.to_image(), max_side=max_side, quality=quality))
            if len(jpegs) == len(targets):
                break
        if last is None:
            raise ValueError(f"{path} has no decodable video frames")
        # A clip shorter than its stated duration repeats its last frame rather than failing.
        while len(jpegs) < len(targets):
            jpegs.append(_to_jpeg(last.to_image(), max_side=max_side, quality=quality))
    return SampledFrames(times_sec=tuple(targets), jpegs=tuple(jpegs))


def frames_data_url(frames: SampledFrames) -> str:
    """vLLM's `video/jpeg` data URL: comma-separated base64 JPEG frames, read as one video."""
    return "data:video/jpeg;base64," + ",".join(
        base64.b64encode(jpeg).decode("ascii") for jpeg in frames.jpegs
    )


def video_data_url(path: Path, *, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def video_file_url(path: Path) -> str:
    return path.resolve().as_uri()
