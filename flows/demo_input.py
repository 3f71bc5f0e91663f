"""Checks on a video uploaded to the web demo: one-line reasons for the person who uploaded it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.config import MIN_CONDITIONING_SEC
from tasks.uploads import UnreadableVideo, VideoInfo, probe_upload

MEGABYTE = 1024 * 1024


class InputRejected(ValueError):
    """The upload cannot be dubbed; the message is meant for the person who uploaded it."""


@dataclass(frozen=True, kw_only=True)
class UploadLimits:
    max_duration_sec: float = 120.0
    max_upload_mb: float = 200.0
    min_duration_sec: float = MIN_CONDITIONING_SEC

    def __post_init__(self) -> None:
        if self.max_duration_sec < self.min_duration_sec:
            raise ValueError(f"max_duration_sec must be at least {self.min_duration_sec:.2f} s")
        if self.max_upload_mb <= 0:
            raise ValueError("max_upload_mb must be positive")


def check_video(path: Path, limits: UploadLimits) -> VideoInfo:
    """Probe the upload and enforce the limits; raises InputRejected with a one-line reason."""
    if not path.is_file():
        raise InputRejected("The upload did not arrive; please upload the video again.")
    size = path.stat().st_size
    if size == 0:
        raise InputRejected("The file is empty (0 bytes).")
    if size > limits.max_upload_mb * MEGABYTE:
        raise InputRejected(
            f"The file is too large: {size / MEGABYTE:.1f} MB; the limit is {limits.max_upload_mb:g} MB."
        )
    try:
        info = probe_upload(path)
    except UnreadableVideo as exc:
        raise InputRejected(f"This file is not a video that can be read: {exc}.") from None
    if info.duration_sec < limits.min_duration_sec:
        raise InputRejected(
            f"The video is too short: {info.duration_sec:.2f} s; at least {limits.min_duration_sec:.2f} s "
            "(16 frames at 25 fps) are needed."
        )
    if info.duration_sec > limits.max_duration_sec:
        raise InputRejected(
            f"The video is too long: {info.duration_sec:.2f} s; the limit is {limits.max_duration_sec:g} s. "
            "Trim it, or start the demo with a larger --max-duration-sec."
        )
    return info
