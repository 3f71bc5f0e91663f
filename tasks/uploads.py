"""A video given from outside a run (an upload to the web demo): what its container holds, and its
content-addressed copy in a folder of the work directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from storage import sha256_file
from storage.local_store import atomic_write
from thinksound.features import VideoDecodeError, VideoInfo, probe_video

__all__ = ["UnreadableVideo", "VideoInfo", "probe_upload", "store_upload"]


class UnreadableVideo(ValueError):
    """The file holds no video that can be read; the message is FFmpeg's reason in one line."""


def probe_upload(path: Path) -> VideoInfo:
    """Container-level facts about the upload's video stream, read without decoding it."""
    try:
        return probe_video(path)
    except VideoDecodeError as exc:
        raise UnreadableVideo(exc.reason) from None


def _suffix(name: str) -> str:
    """The upload's extension if it is a plain one; FFmpeg probes the content, so it is only a hint."""
    suffix = Path(name).suffix.lower()
    return suffix if 1 < len(suffix) <= 6 and suffix[1:].isalnum() else ".video"


def store_upload(path: Path, uploads_dir: Path) -> Path:
    """Copy the upload to `uploads_dir/<sha256><ext>`, once: the same bytes are the same source."""
    digest = sha256_file(path)
    target = uploads_dir / f"{digest}{_suffix(path.name)}"
    if not target.exists():
        with path.open("rb") as source, atomic_write(target) as sink:
            shutil.copyfileobj(source, sink)
    return target
