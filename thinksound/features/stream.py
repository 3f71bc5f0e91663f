"""One streamed decode of a long video into the preprocessed frames of each of its windows.

The CLIP (8 fps) and sync (25 fps) streams are sampled once, on grids that start at the segment's
start; window w gets the frames from round(offset * fps) on, as many as ``decode_clip`` would give for
its duration. Frames are resized to 224 px as they leave FFmpeg's fps filter and dropped as soon as no
later window needs them, so memory holds about one window of small frames, whatever the video's length
or resolution.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import av.error
import numpy as np
import torch

from thinksound.features.transforms import clip_frame_uint8, clip_normalise, sync_frame_uint8, sync_normalise
from thinksound.features.video import (
    CLIP_FPS,
    SYNC_FPS,
    SYNC_SEGMENT_FRAMES,
    DecodedClip,
    VideoDecodeError,
    _absolute_start,
    _check_not_truncated,
    _FpsSampler,
    _frame_step,
    _open,
    _SeekOvershoot,
    _video_stream,
    nominal_frame_counts,
)


class _Buffer:
    """Frames of one stream from index `base` on; a window takes a slice, earlier frames are dropped."""

    def __init__(self, sampler: _FpsSampler) -> None:
        self.sampler, self.base = sampler, 0

    @property
    def end(self) -> int:
        return self.base + len(self.sampler.frames)

    def take(self, first: int, count: int) -> tuple[list, int]:
        """Frames first .. first + count - 1, the last real frame repeated past the end of the video."""
        frames = self.sampler.frames[first - self.base : first - self.base + count]
        if not frames and self.sampler.frames:
            frames = [self.sampler.frames[-1]]
        missing = count - len(frames)
        return (frames + [frames[-1]] * missing, missing) if missing > 0 else (frames, 0)

    def drop_before(self, index: int) -> None:
        keep = max(0, min(index - self.base, len(self.sampler.frames) - 1))
        del self.sampler.frames[:keep]
        self.base += keep


def _spans(offset: float, duration: float) -> tuple[tuple[int, int], tuple[int, int]]:
    n_clip, n_sync = nominal_frame_counts(duration)
    return (round(offset * CLIP_FPS), n_clip), (round(offset * SYNC_FPS), n_sync)


def decode_windows(
    path: str | Path, windows: Sequence[tuple[float, float]], *, start_sec: float = 0.0
) -> Iterator[DecodedClip]:
    """Yield each window's DecodedClip, in order, from one decoding pass.

    `windows` are (offset, duration) in seconds from `start_sec`, sorted by offset. A window that runs
    past the end of the video repeats its last frame, as ``decode_clip`` does.
    """
    if any(b[0] < a[0] for a, b in zip(windows[:-1], windows[1:], strict=True)):
        raise ValueError("windows must be sorted by their offset")
    for offset, duration in windows:
        if offset < 0 or not (duration > 0 and math.isfinite(duration)):
            raise ValueError(f"bad window ({offset}, {duration})")
    spans = [_spans(o, d) for o, d in windows]
    limits = (max(a + n for (a, n), _ in spans), max(a + n for _, (a, n) in spans))
    for use_seek in (True, False) if start_sec > 0 else (False,):
        try:
            yield from _decode_pass(path, windows, spans, limits, start_sec, use_seek)
            return
        except _SeekOvershoot:
            continue


def _decode_pass(path, windows, spans, limits, start_sec, use_seek) -> Iterator[DecodedClip]:
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        start = _absolute_start(stream, start_sec)
        clip = _Buffer(
            _FpsSampler(stream, fps=CLIP_FPS, start_time=start, limit=limits[0], transform=clip_frame_uint8)
        )
        sync = _Buffer(
            _FpsSampler(stream, fps=SYNC_FPS, start_time=start, limit=limits[1], transform=sync_frame_uint8)
        )
        if use_seek and start is not None:
            container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
        pending = list(zip(windows, spans, strict=True))
        last_pts, step = None, _frame_step(stream)
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if frame.pts is None:
                        frame.pts = 0 if last_pts is None else last_pts + step
                    if last_pts is None and use_seek and start is not None:
                        if float(frame.pts * stream.time_base) > start + 1e-6:
                            raise _SeekOvershoot
                    last_pts = frame.pts
                    for buffer in (clip, sync):
                        if buffer.end < buffer.sampler.limit:
                            buffer.sampler.push(frame)
                    while pending and _ready(pending[0][1], clip, sync):
                        yield _emit(pending.pop(0), clip, sync, path, start_sec)
                        _drop_unneeded(pending, clip, sync)
                    if not pending:
                        return
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(f"unreadable video data: {exc.strerror or exc}", path=str(path)) from exc
        if last_pts is None and use_seek and start is not None:
            raise _SeekOvershoot
        for buffer in (clip, sync):
            if buffer.end < buffer.sampler.limit:
                buffer.sampler.push(None)
        _check_not_truncated(stream, last_pts, path)
        while pending:
            yield _emit(pending.pop(0), clip, sync, path, start_sec)


def _ready(spans, clip: _Buffer, sync: _Buffer) -> bool:
    (c0, cn), (s0, sn) = spans
    return clip.end >= c0 + cn and sync.end >= s0 + sn


def _emit(entry, clip: _Buffer, sync: _Buffer, path, start_sec: float) -> DecodedClip:
    (offset, duration), ((c0, cn), (s0, sn)) = entry
    if sync.end - s0 < SYNC_SEGMENT_FRAMES and sync.end < s0 + sn:
        raise VideoDecodeError(
            f"too short: {max(0, sync.end - s0)} sync frames at {SYNC_FPS} fps after {start_sec + offset:.2f} s, "
            f"need at least {SYNC_SEGMENT_FRAMES}",
            path=str(path),
        )
    clip_frames, clip_pad = clip.take(c0, cn)
    sync_frames, sync_pad = sync.take(s0, sn)
    decoded = DecodedClip(
        clip_frames=clip_normalise(torch.from_numpy(np.stack(clip_frames))),
        sync_frames=sync_normalise(torch.stack(sync_frames)),
        duration_sec=float(duration),
        start_sec=float(start_sec + offset),
        clip_padded=clip_pad,
        sync_padded=sync_pad,
    )
    return decoded


def _drop_unneeded(pending, clip: _Buffer, sync: _Buffer) -> None:
    """Frames before the next window's first one belong to no later window (windows are sorted)."""
    if pending:
        (_, ((c0, _), (s0, _))) = pending[0]
        clip.drop_before(c0)
        sync.drop_before(s0)
