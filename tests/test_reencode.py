"""A source whose codec browsers cannot show from MP4 (MPEG-4 Part 2 in a .mov) is dubbed into H.264,
with its picture, and lineage says it was re-encoded; a browser-ready codec is copied as it is."""

from __future__ import annotations

import json
from pathlib import Path

import av
import duckdb
import pytest
from media import make_video

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _picture(path: Path) -> tuple[str, int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return stream.codec_context.name, stream.codec_context.width, frames


def test_mpeg4_part2_is_reencoded_to_h264_and_recorded(tmp_path):
    from flows.dub import dub_dataset
    from tasks.config import PipelineSettings

    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "life.mov", duration=1.5, fps=20, codec="mpeg4", size="64x48")
    make_video(videos / "ball.mp4", duration=1.5, fps=25, size="64x48")
    workdir = tmp_path / "w"
    result = dub_dataset(input=str(videos), settings=PipelineSettings(workdir=str(workdir), steps=2))
    assert result["counts"] == {"succeeded": 2}, result["items"]

    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT s.source, s.video_uri, a.details FROM item_status s JOIN stage_attempts a "
            "ON a.item_id = s.item_id AND a.stage = 'publish' AND a.status = 'succeeded'"
        ).fetchall()
    published = {Path(source).name: (Path(uri.removeprefix("file://")), json.loads(details))
                 for source, uri, details in rows}
    expected = {"life.mov": ("mpeg4", "h264", True), "ball.mp4": ("h264", "h264", False)}
    for name, (source_codec, codec, reencoded) in expected.items():
        dubbed, details = published[name]
        assert dubbed.suffix == ".mp4"
        assert (details["source_video_codec"], details["video_codec"], details["video_reencoded"]) == (
            source_codec, codec, reencoded)
        name_out, width, frames = _picture(dubbed)
        assert (name_out, width) == ("h264", 64), name
        assert frames == _picture(videos / name)[2], "every source frame is kept"
    metrics = json.loads(next((workdir / "artifacts").rglob("metrics.json")).read_text())
    assert set(metrics["video"]) == {"source_video_codec", "video_codec", "video_reencoded"}
