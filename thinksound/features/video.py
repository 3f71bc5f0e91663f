"""Video probing and decoding into the two preprocessed frame streams (CLIP 8 fps, sync 25 fps).

Frame selection runs FFmpeg's own ``fps`` filter (through PyAV's libavfilter graph), as the original's
torio decoder did, so the chosen frames are FFmpeg's by construction. The pixel format conversion to
rgb24 also happens inside the filter graph, as in torio, so chroma upsampling is FFmpeg's default.

Decoding is streaming: each selected frame is resized to 224 px the moment it leaves the filter, and
decoding stops once both streams hold their nominal frame counts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import av.filter
import numpy as np
import torch

from thinksound.features.transforms import clip_frame_uint8, clip_normalise, sync_frame_uint8, sync_normalise

log = logging.getLogger(__name__)

CLIP_FPS = 8
SYNC_FPS = 25
SYNC_SEGMENT_FRAMES = 16
TRUNCATION_SLACK_SEC = 0.5


class VideoDecodeError(Exception):
    """The file cannot give a usable clip; ``reason`` says why in one line."""

    def __init__(self, reason: str, *, path: str | None = None) -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{reason} ({path})" if path else reason)


@dataclass(frozen=True)
class VideoInfo:
    duration_sec: float
    width: int
    height: int
    fps: float
    codec: str
    has_audio: bool


@dataclass(frozen=True, eq=False)
class DecodedClip:
    """Preprocessed frames of the first ``duration_sec`` seconds after ``start_sec``.

    ``clip_frames`` (Tc, 3, 224, 224) float32 with Tc = int(8 * duration_sec);
    ``sync_frames`` (Ts, 3, 224, 224) float32 in [-1, 1] with Ts = int(25 * duration_sec).
    ``*_padded`` count the trailing repeats of the last real frame (the video was shorter).
    """

    clip_frames: torch.Tensor
    sync_frames: torch.Tensor
    duration_sec: float
    start_sec: float = 0.0
    clip_padded: int = 0
    sync_padded: int = 0


def nominal_frame_counts(duration_sec: float) -> tuple[int, int]:
    """(CLIP frames, sync frames) the original extracts for ``duration_sec``: int(8 D), int(25 D)."""
    return int(CLIP_FPS * duration_sec), int(SYNC_FPS * duration_sec)


def _open(path: str | Path) -> av.container.InputContainer:
    p = Path(path)
    if not p.is_file():
        raise VideoDecodeError("not a file", path=str(path))
    if p.stat().st_size == 0:
        raise VideoDecodeError("empty file", path=str(path))
    try:
        return av.open(str(p), mode="r")
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(f"not a readable media file: {exc.strerror or exc}", path=str(path)) from exc


def _video_stream(container: av.container.InputContainer, path: str | Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoDecodeError(f"no video stream (streams: {', '.join(kinds)})", path=str(path))
    stream = container.streams.video[0]
    if not stream.codec_context.width or not stream.codec_context.height:
        raise VideoDecodeError("video stream has no frame size", path=str(path))
    return stream


def _duration_sec(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def probe_video(path: str | Path) -> VideoInfo:
    """Container-level facts about the first video stream; raises VideoDecodeError if there is none."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        duration = _duration_sec(container, stream)
        if duration is None:
            duration = _scan_duration(container, stream)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return VideoInfo(
            duration_sec=float(duration),
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            fps=float(rate) if rate else 0.0,
            codec=stream.codec_context.name,
            has_audio=bool(container.streams.audio),
        )


def _scan_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    # Some raw or damaged containers carry no duration: read packet timestamps without decoding.
    end = 0.0
    for packet in container.demux(stream):
        if packet.pts is None or packet.time_base is None:
            continue
        end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    return end


class _FpsSampler:
    """One FFmpeg ``fps`` filter chain (plus rgb24 conversion) feeding a per-frame transform."""

    def __init__(
        self,
        stream: av.video.stream.VideoStream,
        *,
        fps: int,
        start_time: float | None,
        limit: int,
        transform: Callable[[np.ndarray], np.ndarray | torch.Tensor],
    ) -> None:
        self.limit = limit
        self.transform = transform
        self.frames: list[np.ndarray | torch.Tensor] = []
        self.graph = av.filter.Graph()
        src = self.graph.add_buffer(template=stream)
        fps_args = f"fps={fps}" + (f":start_time={start_time!r}" if start_time is not None else "")
        fps_node = self.graph.add("fps", fps_args)
        fmt = self.graph.add("format", "pix_fmts=rgb24")
        sink = self.graph.add("buffersink")
        src.link_to(fps_node)
        fps_node.link_to(fmt)
        fmt.link_to(sink)
        self.graph.configure()

    @property
    def full(self) -> bool:
        return len(self.frames) >= self.limit

    def push(self, frame: av.VideoFrame | None) -> None:
        if self.full:
            return
        self.graph.push(frame)
        self._drain()

    def _drain(self) -> None:
        while not self.full:
            try:
                out = self.graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            self.frames.append(self.transform(out.to_ndarray()))


class _SeekOvershoot(Exception):
    """The seek landed after the window start (containers without a precise index)."""


def _absolute_start(stream: av.video.stream.VideoStream, start_sec: float) -> float | None:
    # start_sec counts from the stream's own start; the fps filter works on absolute timestamps.
    if start_sec <= 0:
        return None
    base = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    return base + start_sec


Spec = tuple[int, int, Callable[[np.ndarray], np.ndarray | torch.Tensor]]  # (fps, frame limit, transform)


def _decode_window(path: str | Path, specs: list[Spec], start_sec: float) -> list[_FpsSampler]:
    """Run one decode pass feeding one fps-filter sampler per spec; seek first when starting later.

    If the seek overshoots (e.g. MPEG-TS, where seeking is approximate and decoding restarts at the next
    keyframe), decode again from the beginning and let the fps filter drop the frames before the start.
    """
    for use_seek in (True, False) if start_sec > 0 else (False,):
        with _open(path) as container:
            stream = _video_stream(container, path)
            stream.thread_type = "AUTO"
            start = _absolute_start(stream, start_sec)
            samplers = [_FpsSampler(stream, fps=f, start_time=start, limit=n, transform=t) for f, n, t in specs]
            if use_seek and start is not None:
                container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
            try:
                _run(container, stream, samplers, path, must_start_by=start if use_seek else None)
            except _SeekOvershoot:
                log.debug("%s: seek to %.3f s overshot; decoding from the start", path, start_sec)
                continue
            return samplers
    raise AssertionError("unreachable: the pass without seeking never overshoots")


def _pad_last(frames: list, count: int) -> tuple[list, int]:
    missing = count - len(frames)
    if missing <= 0:
        return frames[:count], 0
    return frames + [frames[-1]] * missing, missing


def decode_clip(path: str | Path, *, duration_sec: float, start_sec: float = 0.0) -> DecodedClip:
    """Decode the first ``duration_sec`` seconds after ``start_sec`` into both preprocessed streams.

    Frames are chosen by FFmpeg's fps filter at 8 and 25 fps. A video that ends early repeats its last
    frame up to the nominal counts, as the original does. Raises VideoDecodeError when the file is not
    a readable video, has no video stream, is corrupt before the window is filled, or gives fewer than
    16 sync frames (one Synchformer segment).
    """
    if not (duration_sec > 0 and math.isfinite(duration_sec)):
        raise ValueError(f"duration_sec must be positive and finite, got {duration_sec!r}")
    if start_sec < 0 or not math.isfinite(start_sec):
        raise ValueError(f"start_sec must be >= 0 and finite, got {start_sec!r}")
    n_clip, n_sync = nominal_frame_counts(duration_sec)
    if n_sync < SYNC_SEGMENT_FRAMES:
        raise ValueError(
            f"duration_sec={duration_sec} gives {n_sync} sync frames; Synchformer needs "
            f"{SYNC_SEGMENT_FRAMES} (duration >= 0.64 s)"
        )

    clip_s, sync_s = _decode_window(
        path, [(CLIP_FPS, n_clip, clip_frame_uint8), (SYNC_FPS, n_sync, sync_frame_uint8)], start_sec
    )

    if not sync_s.frames:
        raise VideoDecodeError("no decodable video frames", path=str(path))
    if len(sync_s.frames) < SYNC_SEGMENT_FRAMES:
        raise VideoDecodeError(
            f"too short: {len(sync_s.frames)} sync frames at {SYNC_FPS} fps after {start_sec} s, "
            f"need at least {SYNC_SEGMENT_FRAMES}",
            path=str(path),
        )
    clip_frames, clip_pad = _pad_last(clip_s.frames, n_clip)
    sync_frames, sync_pad = _pad_last(sync_s.frames, n_sync)
    if clip_pad or sync_pad:
        log.debug("%s: repeated last frame %d (clip) / %d (sync) times", path, clip_pad, sync_pad)
    clip_u8 = torch.from_numpy(np.stack(clip_frames))  # (Tc, 224, 224, 3)
    sync_u8 = torch.stack(sync_frames)  # (Ts, 3, 224, 224)
    return DecodedClip(
        clip_frames=clip_normalise(clip_u8),
        sync_frames=sync_normalise(sync_u8),
        duration_sec=float(duration_sec),
        start_sec=float(start_sec),
        clip_padded=clip_pad,
        sync_padded=sync_pad,
    )


def sample_frames(path: str | Path, *, fps: int, max_frames: int, start_sec: float = 0.0) -> np.ndarray:
    """Raw rgb24 frames (T, H, W, 3) uint8 as FFmpeg's fps filter selects them, at most ``max_frames``.

    No padding and no resizing: this is the frame selection alone (for checks and previews of short
    windows; the frames are full resolution).
    """
    (sampler,) = _decode_window(path, [(fps, max_frames, np.copy)], start_sec)
    if not sampler.frames:
        raise VideoDecodeError("no decodable video frames", path=str(path))
    return np.stack(sampler.frames)


def _run(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    samplers: list[_FpsSampler],
    path: str | Path,
    *,
    must_start_by: float | None = None,
) -> None:
    last_pts: int | None = None
    step = _frame_step(stream)
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                # A frame without pts (some raw or AVI streams) continues the previous timeline.
                if frame.pts is None:
                    frame.pts = 0 if last_pts is None else last_pts + step
                if last_pts is None and must_start_by is not None:
                    if float(frame.pts * stream.time_base) > must_start_by + 1e-6:
                        raise _SeekOvershoot
                last_pts = frame.pts
                for s in samplers:
                    s.push(frame)
                if all(s.full for s in samplers):
                    return
    except av.error.FFmpegError as exc:
        if not samplers[-1].frames:
            raise VideoDecodeError(f"unreadable video data: {exc.strerror or exc}", path=str(path)) from exc
        raise VideoDecodeError(
            f"corrupt video data after {len(samplers[-1].frames)} sync frames: {exc.strerror or exc}",
            path=str(path),
        ) from exc
    if last_pts is None and must_start_by is not None:
        raise _SeekOvershoot  # nothing decodable after the seek point: no keyframe there
    for s in samplers:
        s.push(None)
    _check_not_truncated(stream, last_pts, path)


def _check_not_truncated(stream: av.video.stream.VideoStream, last_pts: int | None, path: str | Path) -> None:
    """The data ran out before the window was filled: fail if the stream claims to be much longer.

    Only the video stream's own duration is trusted (the container's may include a longer audio
    track), and half a second of slack absorbs edit lists and rounding. A genuinely short video
    still pads, as the original does.
    """
    if last_pts is None or stream.duration is None or stream.time_base is None:
        return
    start = stream.start_time or 0
    claimed = float((start + stream.duration) * stream.time_base)
    decoded = float(last_pts * stream.time_base)
    if claimed - decoded > TRUNCATION_SLACK_SEC:
        raise VideoDecodeError(
            f"truncated: video data ends at {decoded:.2f} s but the stream claims {claimed:.2f} s",
            path=str(path),
        )


def _frame_step(stream: av.video.stream.VideoStream) -> int:
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    return max(1, round(1 / (rate * stream.time_base)))
