"""One streamed decode of a long video gives each window the frames `decode_clip` would give it."""

from __future__ import annotations

import pytest
import torch
from media import make_video

from thinksound.features import decode_clip
from thinksound.features.stream import decode_windows


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("stream") / "v.mp4", duration=20.0, fps=30, size="64x48")


def test_windows_match_separate_decodes(video) -> None:
    # 0 s and 11 s lie on both frame grids; 5.52 s = 138 / 25 lies on the sync grid (46.16 CLIP frames).
    windows = list(decode_windows(video, [(0.0, 9.0), (5.52, 9.0), (11.0, 9.0)]))
    assert [(w.clip_frames.shape[0], w.sync_frames.shape[0]) for w in windows] == [(72, 225)] * 3
    for got, offset in zip(windows, (0.0, 5.52, 11.0), strict=True):
        ref = decode_clip(video, duration_sec=9.0, start_sec=offset)
        assert torch.equal(got.sync_frames, ref.sync_frames), offset
        assert got.start_sec == offset
    assert torch.equal(windows[0].clip_frames, decode_clip(video, duration_sec=9.0).clip_frames)
    assert torch.equal(
        windows[2].clip_frames, decode_clip(video, duration_sec=9.0, start_sec=11.0).clip_frames
    )


def test_a_window_past_the_end_repeats_the_last_frame_and_a_segment_start_is_honoured(video) -> None:
    (tail,) = decode_windows(video, [(6.0, 9.0)], start_sec=9.0)  # 15 s to 24 s of a 20 s video
    assert tail.sync_padded == 100 and tail.clip_padded == 32
    assert torch.equal(tail.sync_frames[-1], tail.sync_frames[-100])
    ref = decode_clip(video, duration_sec=9.0, start_sec=15.0)
    assert torch.equal(tail.sync_frames, ref.sync_frames)
    with pytest.raises(ValueError, match="sorted"):
        list(decode_windows(video, [(5.0, 9.0), (1.0, 9.0)]))
