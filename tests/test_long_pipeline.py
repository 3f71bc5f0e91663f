"""Whole videos longer than one window, through the real CLI and flow: real FFmpeg videos, real store."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import duckdb
import pytest
import soundfile
from media import ffmpeg, make_video

from thinksound.config import TINY
from thinksound.features import probe_video
from thinksound.windows import plan_windows

SAMPLE_RATE = 44_100
THINKSOUND = str(Path(sys.executable).with_name("thinksound"))


def _vfr_video(path: Path, duration: float) -> Path:
    """Variable frame rate: 30 fps for the first 4 s, then every third frame (10 fps)."""
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=64x48:rate=30:duration={duration}",
        "-vf", "select='lt(t,4)+not(mod(n,3))'", "-fps_mode", "vfr",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path),
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("long-videos")
    _vfr_video(folder / "vfr.mp4", 9.5)
    make_video(folder / "odd.mkv", duration=12.0, fps="30000/1001", size="64x48")  # type: ignore[arg-type]
    make_video(folder / "minute.mov", duration=61.0, fps="24000/1001", codec="mpeg4", size="64x48")  # type: ignore[arg-type]
    # Three minutes (23 windows), tiny frames: the CLI test dubs it beside the others for little more.
    make_video(folder / "three_minutes.mp4", duration=180.0, fps=25, size="64x48")
    return folder


def _frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))


def _stream_duration(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.duration is not None:
            return float(stream.duration * stream.time_base)
        return container.duration / 1e6


def test_cli_dubs_every_second_of_videos_longer_than_a_window(long_videos: Path, tmp_path: Path) -> None:
    """The fixed interface: `thinksound run DIR --preset tiny --workdir W`."""
    workdir = tmp_path / "w"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [THINKSOUND, "run", str(long_videos), "--preset", "tiny", "--workdir", str(workdir), "--steps", "2"],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT source, status, error, audio_uri, video_uri FROM item_status").fetchall()
        cots = dict(con.execute("SELECT source, parsed FROM cot").fetchall())
        window_cots = con.execute(
            "SELECT source, window_index, window_start_sec, window_end_sec FROM item_cot "
            "ORDER BY source, window_index"
        ).fetchall()
    assert len(rows) == 4 and {r[1] for r in rows} == {"succeeded"}, rows
    for source, _, _, audio_uri, video_uri in rows:
        source_path = Path(source)
        duration = probe_video(source_path).duration_sec
        audio_path = Path(audio_uri.removeprefix("file://"))
        audio = soundfile.info(str(audio_path))
        # The audio is the video's length to within one audio frame (sample) ...
        assert abs(audio.frames - duration * SAMPLE_RATE) <= 1, (source, audio.frames, duration)
        # ... the dubbed video keeps every frame and lasts as long as the source.
        dubbed = Path(video_uri.removeprefix("file://"))
        assert _frames(dubbed) == _frames(source_path), source
        assert abs(_stream_duration(dubbed) - _stream_duration(source_path)) <= 0.15, source
        metrics = json.loads((audio_path.parent / "metrics.json").read_text())
        plan = plan_windows(TINY, metrics["duration_sec"] if duration <= 9 else duration)
        windows = metrics["windows"]
        assert len(windows) == len(plan.windows) >= 2 and metrics["join"] == "multidiffusion"
        assert windows[0]["start_sec"] == 0 and windows[-1]["end_sec"] == pytest.approx(duration, abs=1e-3)
        assert all(a["end_sec"] > b["start_sec"] for a, b in zip(windows[:-1], windows[1:], strict=True))
        assert len({w["seed"] for w in windows}) == len(windows)
        assert len({w["video_features_key"] for w in windows}) == len(windows)
        assert len(metrics["seams"]) == len(windows) - 1
        assert all(isinstance(s["level_jump_db"], float) for s in metrics["seams"])
        recorded = json.loads(cots[source])["windows"]
        assert [(w["start_sec"], w["end_sec"]) for w in recorded] == [
            (w["start_sec"], w["end_sec"]) for w in windows
        ]
        # item_cot has one row per window, with its index and time range.
        assert [row[1:] for row in window_cots if row[0] == source] == [
            (w["index"], w["start_sec"], w["end_sec"]) for w in windows
        ]


def _manifest(path: Path, video: Path, window_cots: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["video", "caption", "caption_cot"])
        writer.writeheader()
        writer.writerow(
            {"video": str(video), "caption": "a test pattern", "caption_cot": json.dumps(window_cots)}
        )
    return path


def _feature_files(workdir: Path, kind: str) -> set[Path]:
    return set((workdir / "artifacts" / "features" / kind).rglob("*.safetensors"))


@pytest.mark.usefixtures("prefect_harness")
def test_rerun_reuses_every_window_and_one_edited_cot_recomputes_one(
    long_videos: Path, tmp_path: Path
) -> None:
    from flows.dub import dub_dataset
    from tasks.config import PipelineSettings

    workdir = tmp_path / "w"
    cots = [
        {"start": 0, "end": 6, "cot": "A bright pattern hums steadily."},
        {"start": 6, "end": 12, "cot": "The pattern keeps humming, a little louder."},
    ]
    # Manifest videos must lie under the manifest's folder (the input roots).
    video = Path(shutil.copy(long_videos / "odd.mkv", tmp_path / "odd.mkv"))
    manifest = _manifest(tmp_path / "m.csv", video, cots)

    def run(seed: int) -> dict:
        result = dub_dataset(
            input=str(manifest), settings=PipelineSettings(workdir=str(workdir), steps=2, seed=seed)
        )
        assert result["counts"] == {"succeeded": 1}, result
        return result

    run(0)
    videos, texts = _feature_files(workdir, "video"), _feature_files(workdir, "text")
    assert len(videos) == 2 and len(texts) == 2
    # Another seed generates again, from every window's stored features.
    run(1)
    assert _feature_files(workdir, "video") == videos and _feature_files(workdir, "text") == texts
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        status, params = con.execute(
            "SELECT status, params FROM stage_attempts WHERE stage = 'features' ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
    assert status == "cached" and json.loads(params)["video_windows_computed"] == 0
    # One window's CoT edited: one new text feature, no video decoded, the new text in lineage.
    cots[1]["cot"] = "The pattern falls silent, then a bell rings."
    _manifest(manifest, video, cots)
    run(1)
    assert _feature_files(workdir, "video") == videos
    assert len(_feature_files(workdir, "text") - texts) == 1
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        parsed = con.execute("SELECT parsed FROM cot ORDER BY created_at DESC LIMIT 1").fetchone()[0]
        by_window = con.execute(
            "SELECT window_index, window_start_sec, window_end_sec, caption_cot FROM item_cot ORDER BY window_index"
        ).fetchall()
    assert [w["caption_cot"] for w in json.loads(parsed)["windows"]] == [c["cot"] for c in cots]
    # The 12 s video's two windows, each with its own CoT and time range, as item_cot rows.
    assert [(row[0], row[3]) for row in by_window] == [(0, cots[0]["cot"]), (1, cots[1]["cot"])]
    assert by_window[0][1] == 0 and by_window[1][2] == pytest.approx(probe_video(video).duration_sec, abs=1e-3)
    assert by_window[1][1] < by_window[0][2], "the windows overlap"


@pytest.mark.usefixtures("prefect_harness")
def test_a_video_over_the_limit_fails_unless_truncated(long_videos: Path, tmp_path: Path) -> None:
    from flows.dub import RunFailed, dub_dataset
    from tasks.config import PipelineSettings

    single = tmp_path / "in"
    single.mkdir()
    shutil.copy(long_videos / "vfr.mp4", single / "vfr.mp4")
    settings = PipelineSettings(workdir=str(tmp_path / "w"), steps=2, max_duration_sec=4.0)
    try:
        refused = dub_dataset(input=str(single), settings=settings)
    except RunFailed as failed:  # no item dubbed: the flow run ends Failed
        refused = failed.result
    (item,) = refused["items"]
    assert item["status"] == "failed" and "too long" in item["error"] and "--truncate" in item["error"]
    cut = dub_dataset(input=str(single), settings=settings.model_copy(update={"truncate": True}))
    (item,) = cut["items"]
    assert item["status"] == "succeeded"
    with duckdb.connect(str(tmp_path / "w" / "lineage.duckdb"), read_only=True) as con:
        (audio_uri,) = con.execute("SELECT audio_uri FROM item_status").fetchone()
    assert soundfile.info(audio_uri.removeprefix("file://")).frames == 4 * SAMPLE_RATE
