"""Video decoding: containers, codecs, frame selection against FFmpeg's fps filter, broken inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from feat_media import VIDEOS, ffmpeg, ffmpeg_fps_frames, make_all

from thinksound.features import VideoDecodeError, decode_clip, nominal_frame_counts, probe_video
from thinksound.features.transforms import clip_frame_uint8, clip_normalise, sync_frame_uint8, sync_normalise
from thinksound.features.video import sample_frames


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    return make_all(tmp_path_factory.mktemp("feat_videos"))


@pytest.fixture(scope="session")
def broken(tmp_path_factory, videos) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("feat_broken")
    out = {"empty.mp4": root / "empty.mp4", "text.mp4": root / "text.mp4", "truncated.mp4": root / "truncated.mp4"}
    out["empty.mp4"].write_bytes(b"")
    out["text.mp4"].write_text("this is a text file, not a video\n" * 20)
    data = videos["h264.mp4"].read_bytes()
    out["truncated.mp4"].write_bytes(data[: len(data) // 3])  # moov atom at the end is lost
    out["audio.m4a"] = root / "audio.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(out["audio.m4a"]))
    # faststart puts the index first, so a cut file still opens and claims its full duration
    faststart = root / "faststart.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=4",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(faststart),
    )  # fmt: skip
    data = faststart.read_bytes()
    out["cut.mp4"] = root / "cut.mp4"
    out["cut.mp4"].write_bytes(data[: len(data) * 2 // 3])
    out["short.mp4"] = root / "short.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=25:duration=0.4",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out["short.mp4"]),
    )  # fmt: skip
    return out


def _size(name: str) -> tuple[int, int]:
    size, _, _, _, vf = VIDEOS[name]
    if vf.startswith("scale="):
        size = vf.removeprefix("scale=").replace(":", "x")
    w, h = (int(v) for v in size.split("x"))
    return w, h


@pytest.mark.parametrize("name", sorted(VIDEOS))
def test_probe_reports_stream_facts(videos, name):
    info = probe_video(videos[name])
    w, h = _size(name)
    assert (info.width, info.height) == (w, h)
    assert info.duration_sec > 1.0
    assert info.fps > 0
    assert info.codec
    assert info.has_audio is False


@pytest.mark.parametrize("name", sorted(VIDEOS))
@pytest.mark.parametrize("fps", [8, 25])
def test_frame_selection_equals_ffmpeg_fps_filter(videos, name, fps):
    w, h = _size(name)
    ref = ffmpeg_fps_frames(videos[name], fps=fps, width=w, height=h)
    ours = sample_frames(videos[name], fps=fps, max_frames=10_000)
    assert ours.shape == ref.shape
    assert np.array_equal(ours, ref)


@pytest.mark.parametrize("name", sorted(VIDEOS))
def test_decode_shapes_and_padding(videos, name):
    duration = 2.0
    clip = decode_clip(videos[name], duration_sec=duration)
    n_clip, n_sync = nominal_frame_counts(duration)
    assert clip.clip_frames.shape == (n_clip, 3, 224, 224)
    assert clip.sync_frames.shape == (n_sync, 3, 224, 224)
    assert clip.clip_frames.dtype == clip.sync_frames.dtype == torch.float32
    assert clip.sync_frames.min() >= -1 and clip.sync_frames.max() <= 1
    real_sync = len(sample_frames(videos[name], fps=25, max_frames=n_sync))
    assert clip.sync_padded == n_sync - real_sync
    if clip.sync_padded:
        # The shorter video repeats its last frame, as the original does.
        assert torch.equal(clip.sync_frames[-1], clip.sync_frames[real_sync - 1])
        assert torch.equal(clip.clip_frames[-1], clip.clip_frames[n_clip - clip.clip_padded - 1])


def test_decode_matches_transforms_of_ffmpeg_frames(videos):
    # End to end: ffmpeg CLI's fps output pushed through the transforms equals decode_clip.
    name = "odd.mkv"
    w, h = _size(name)
    clip = decode_clip(videos[name], duration_sec=1.0)
    ref8 = ffmpeg_fps_frames(videos[name], fps=8, width=w, height=h)[:8]
    ref25 = ffmpeg_fps_frames(videos[name], fps=25, width=w, height=h)[:25]
    expect_clip = clip_normalise(torch.from_numpy(np.stack([clip_frame_uint8(f) for f in ref8])))
    expect_sync = sync_normalise(torch.stack([sync_frame_uint8(f) for f in ref25]))
    assert torch.equal(clip.clip_frames, expect_clip)
    assert torch.equal(clip.sync_frames, expect_sync)


def test_nominal_counts_follow_int_truncation():
    assert nominal_frame_counts(9.0) == (72, 225)
    assert nominal_frame_counts(9.6) == (76, 240)
    assert nominal_frame_counts(1.0) == (8, 25)


def test_fractional_duration_truncates(videos):
    clip = decode_clip(videos["h264.mp4"], duration_sec=1.3)
    assert clip.clip_frames.shape[0] == 10 and clip.sync_frames.shape[0] == 32
    assert clip.clip_padded == clip.sync_padded == 0


@pytest.mark.parametrize("name", ["h264.mp4", "h264.ts"])
def test_start_offset_selects_later_frames(videos, name):
    path = videos[name]
    w, h = _size(name)
    ref = ffmpeg_fps_frames(path, fps=25, width=w, height=h)
    late = sample_frames(path, fps=25, max_frames=10, start_sec=1.0)
    # 1.0 s at 25 fps is output slot 25 of the unshifted selection.
    assert np.array_equal(late, ref[25:35])
    clip = decode_clip(path, duration_sec=1.0, start_sec=1.0)
    expect = sync_normalise(torch.stack([sync_frame_uint8(f) for f in ref[25:50]]))
    assert torch.equal(clip.sync_frames, expect)


def test_long_window_on_short_video_pads(videos):
    clip = decode_clip(videos["fps60.mp4"], duration_sec=3.0)
    assert clip.sync_frames.shape[0] == 75
    assert clip.sync_padded == 75 - 30
    assert torch.equal(clip.sync_frames[30:], clip.sync_frames[29:30].expand(45, -1, -1, -1))


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("empty.mp4", "empty"),
        ("text.mp4", "not a readable media file"),
        ("truncated.mp4", "not a readable media file"),
        ("audio.m4a", "no video stream"),
        ("short.mp4", "too short"),
        ("cut.mp4", "truncated"),
    ],
)
def test_broken_inputs_raise_typed_error(broken, name, needle):
    with pytest.raises(VideoDecodeError) as err:
        decode_clip(broken[name], duration_sec=4.0)
    assert needle in err.value.reason
    if name not in ("short.mp4", "cut.mp4"):
        with pytest.raises(VideoDecodeError):
            probe_video(broken[name])


def test_missing_file_and_bad_durations(videos, tmp_path):
    with pytest.raises(VideoDecodeError, match="not a file"):
        decode_clip(tmp_path / "nope.mp4", duration_sec=1.0)
    with pytest.raises(ValueError, match="0.64"):
        decode_clip(videos["h264.mp4"], duration_sec=0.5)
    with pytest.raises(ValueError):
        decode_clip(videos["h264.mp4"], duration_sec=float("nan"))
