"""Exact muxing: every dubbed video keeps every source frame, and its audio lasts as long as the video."""

from __future__ import annotations

from pathlib import Path

import av
import duckdb
import pytest
import soundfile
from media import make_video

pytestmark = pytest.mark.usefixtures("prefect_harness")

SAMPLE_RATE = 44_100
# (name, fps, duration, codec): 2.0 s clips are the ones whose audio came out 136 samples short.
CLIPS = [
    ("ball.mp4", 25, 2.0, "libx264"),
    ("bars.mkv", 30, 2.5, "libx264"),
    ("mandel.webm", 24, 2.0, "libvpx-vp9"),
    ("life.mov", 20, 2.0, "mpeg4"),
]


def _video_frames(path: Path) -> tuple[int, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(stream)), float(stream.average_rate)


def test_every_published_video_keeps_every_source_frame(tmp_path):
    from flows.dub import dub_dataset
    from tasks.config import PipelineSettings

    videos = tmp_path / "videos"
    videos.mkdir()
    for name, fps, duration, codec in CLIPS:
        make_video(videos / name, duration=duration, fps=fps, codec=codec, size="64x48")
    workdir = tmp_path / "w"
    dub_dataset(input=str(videos), settings=PipelineSettings(workdir=str(workdir), steps=2, batch_size=4))

    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT source, status, audio_uri, video_uri FROM item_status").fetchall()
    assert len(rows) == len(CLIPS) and {r[1] for r in rows} == {"succeeded"}, rows
    for source, _, audio_uri, video_uri in rows:
        source_frames, fps = _video_frames(Path(source))
        dubbed = Path(video_uri.removeprefix("file://"))
        assert dubbed.suffix in {".mp4", ".mkv"}
        dubbed_frames, _ = _video_frames(dubbed)
        assert dubbed_frames == source_frames, (source, dubbed_frames, source_frames)
        audio = soundfile.info(audio_uri.removeprefix("file://"))
        assert audio.samplerate == SAMPLE_RATE
        video_seconds = source_frames / fps
        assert abs(audio.frames - video_seconds * SAMPLE_RATE) <= 1, (source, audio.frames, video_seconds)


def test_covering_duration_adds_a_latent_frame_only_when_rounding_falls_short():
    from thinksound.config import TINY
    from thinksound.windows import covering_duration

    # 2.0 s: round(44100 / 2048 * 2) = 43 hops = 88,064 samples < 88,200.
    longer = covering_duration(TINY, 2.0)
    assert round(44_100 / 2048 * longer) * 2048 >= 88_200 and int(longer) == 2
    # 3.0 s: 65 hops = 133,120 samples already cover 132,300.
    assert covering_duration(TINY, 3.0) == 3.0
