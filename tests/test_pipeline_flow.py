"""The dubbing flows end to end on the tiny presets, against a real Prefect API and DuckDB file."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import av
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile
from media import make_audio_only, make_video, truncate
from s3_server import new_bucket_name, s3_server  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _settings(workdir: Path, **overrides):
    from tasks.config import PipelineSettings

    return PipelineSettings(workdir=str(workdir), steps=2, batch_size=4, max_duration_sec=2.0, **overrides)


def _status(workdir: Path) -> dict[str, dict]:
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT source, status, error, audio_uri, video_uri FROM item_status").fetchall()
    return {r[0]: {"status": r[1], "error": r[2], "audio_uri": r[3], "video_uri": r[4]} for r in rows}


def _count(workdir: Path, sql: str, params: list | None = None) -> int:
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        return con.execute(sql, params or []).fetchone()[0]


def _local(uri: str) -> Path:
    assert uri.startswith("file://"), uri
    return Path(uri.removeprefix("file://"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dataset")
    scratch = tmp_path_factory.mktemp("scratch")
    make_video(folder / "walk.mp4", duration=1.5)
    shutil.copy(folder / "walk.mp4", folder / "walk_renamed.mp4")
    make_video(folder / "portrait.mkv", duration=1.2, size="48x80", fps=30)
    (folder / "notes.mp4").write_text("this is not a video\n")
    (folder / "empty.mp4").write_bytes(b"")
    truncate(make_video(scratch / "full.mp4", duration=2.0), folder / "truncated.mp4", keep_fraction=0.2)
    make_audio_only(folder / "tone.m4a")
    make_video(folder / "blink.mp4", duration=0.4)
    return folder


@pytest.fixture(scope="module")
def first_run(dataset, tmp_path_factory):
    from flows.dub import dub_dataset

    workdir = tmp_path_factory.mktemp("work")
    result = dub_dataset(input=str(dataset), settings=_settings(workdir))
    return workdir, result


GOOD = ("walk.mp4", "walk_renamed.mp4", "portrait.mkv")
BROKEN = {
    "notes.mp4": "",
    "empty.mp4": "empty",
    "truncated.mp4": "",
    "tone.m4a": "video stream",
    "blink.mp4": "too short",
}


def test_good_videos_are_dubbed_and_published(first_run, dataset):
    workdir, _ = first_run
    status = _status(workdir)
    for name in GOOD:
        row = status[str(dataset / name)]
        assert row["status"] == "succeeded", row
        assert row["error"] is None
        audio, video = _local(row["audio_uri"]), _local(row["video_uri"])
        info = soundfile.info(str(audio))
        assert (info.samplerate, info.channels) == (44100, 2)
        with av.open(str(dataset / name)) as source:
            source_duration = float(source.duration) / 1e6
        assert abs(info.duration - min(source_duration, 2.0)) < 0.06
        with av.open(str(video)) as dubbed:
            kinds = sorted(s.type for s in dubbed.streams)
            assert kinds == ["audio", "video"]
            assert dubbed.streams.audio[0].codec_context.name == "aac"
            assert float(dubbed.duration) / 1e6 > 0.5


def test_every_broken_input_fails_alone_with_a_reason(first_run, dataset):
    workdir, result = first_run
    status = _status(workdir)
    for name, hint in BROKEN.items():
        row = status[str(dataset / name)]
        assert row["status"] == "failed", (name, row)
        assert row["error"] and hint in row["error"].lower(), (name, row["error"])
        assert row["audio_uri"] is None and row["video_uri"] is None
    assert result["counts"] == {"succeeded": len(GOOD), "failed": len(BROKEN)}


def test_same_bytes_under_two_names_are_computed_once(first_run, dataset):
    workdir, _ = first_run
    status = _status(workdir)
    original, renamed = status[str(dataset / "walk.mp4")], status[str(dataset / "walk_renamed.mp4")]
    assert original["audio_uri"] == renamed["audio_uri"]
    assert _count(workdir, "SELECT count(*) FROM stage_attempts WHERE stage = 'synthesis'") == 2


def test_rerun_reuses_every_finished_item(first_run, dataset):
    from flows.dub import dub_dataset

    workdir, first = first_run
    synth_before = _count(workdir, "SELECT count(*) FROM stage_attempts WHERE stage = 'synthesis'")
    again = dub_dataset(input=str(dataset), settings=_settings(workdir))
    assert again["counts"] == first["counts"]
    assert again["cached"] == len(GOOD)
    assert _count(workdir, "SELECT count(*) FROM stage_attempts WHERE stage = 'synthesis'") == synth_before
    before = {s: r["audio_uri"] for s, r in _status(workdir).items()}
    assert before == {i["source"]: i["audio_uri"] for i in again["items"]}


def test_lineage_records_stages_versions_and_timings(first_run, dataset):
    workdir, result = first_run
    run_id = result["run_id"]
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        stages = {r[0] for r in con.execute(
            "SELECT DISTINCT stage FROM stage_attempts WHERE run_id = ?", [run_id]).fetchall()}
        synth = con.execute(
            "SELECT model_version, params, duration_s FROM stage_attempts WHERE run_id = ? AND stage = 'synthesis'",
            [run_id]).fetchall()
        run_status = con.execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]
    assert stages == {"ingest", "cot", "features", "synthesis", "qc", "publish"}
    assert all(r[0].startswith("tiny/") and '"item_seed"' in str(r[1]) and r[2] >= 0 for r in synth)
    assert run_status == "completed"


def test_every_attempt_names_the_process_that_ran_it(first_run):
    import os
    import socket

    workdir, result = first_run
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        workers = {r[0] for r in con.execute(
            "SELECT DISTINCT worker FROM stage_attempts WHERE run_id = ?", [result["run_id"]]).fetchall()}
    assert workers == {f"{socket.gethostname()}:{os.getpid()}"}, "the local executor computes in this process"


def test_rejected_items_are_reprocessed_with_relaxed_checks(dataset, tmp_path):
    from flows.dub import RunFailed, dub_dataset
    from flows.reprocess import reprocess_failed
    from tasks.config import QualitySettings

    impossible = QualitySettings(min_loudness_lufs=10.0)
    with pytest.raises(RunFailed) as no_item_succeeded:
        dub_dataset(input=str(dataset), settings=_settings(tmp_path, quality=impossible))
    assert no_item_succeeded.value.result["counts"]["rejected"] == len(GOOD)
    assert "too quiet" in _status(tmp_path)[str(dataset / "walk.mp4")]["error"]

    relaxed = {"quality": {"min_loudness_lufs": -50.0}}
    again = reprocess_failed(workdir=str(tmp_path), overrides=relaxed, stage="qc")
    assert again["counts"] == {"succeeded": len(GOOD)}
    recorded = _count(tmp_path, "SELECT params FROM runs WHERE run_id = ?", [again["run_id"]])
    assert json.loads(recorded)["reprocess"]["overrides"] == relaxed
    assert json.loads(recorded)["quality"]["min_loudness_lufs"] == -50.0
    assert json.loads(recorded)["steps"] == 2, "settings not overridden come from the rejecting run"
    status = _status(tmp_path)
    assert all(status[str(dataset / n)]["status"] == "succeeded" for n in GOOD)
    assert all(status[str(dataset / n)]["status"] == "failed" for n in BROKEN)
    features = _count(
        tmp_path, "SELECT count(*) FROM stage_attempts WHERE run_id = ? AND stage = 'features' AND status = 'cached'",
        [again["run_id"]])
    assert features == 2


def test_regeneration_keeps_trying_new_seeds(dataset, tmp_path):
    from flows.dub import RunFailed, dub_dataset
    from flows.reprocess import reprocess_failed
    from tasks.config import QualitySettings

    strict = QualitySettings(min_loudness_lufs=10.0, max_regenerations=2)
    with pytest.raises(RunFailed) as rejected:
        dub_dataset(input=str(dataset / "portrait.mkv"), settings=_settings(tmp_path, quality=strict))
    assert rejected.value.result["counts"] == {"rejected": 1}
    seeds = _count(tmp_path, "SELECT count(DISTINCT json_extract(params, '$.item_seed')) FROM stage_attempts "
                             "WHERE stage = 'synthesis'")
    assert seeds == 3

    # Reprocessed with fewer regenerations than the rejecting run made, it still gets unused seeds.
    with pytest.raises(RunFailed):
        reprocess_failed(workdir=str(tmp_path), overrides={"quality": {"max_regenerations": 0}})
    seeds = _count(tmp_path, "SELECT count(DISTINCT json_extract(params, '$.item_seed')) FROM stage_attempts "
                             "WHERE stage = 'synthesis'")
    assert seeds == 4


def _write_manifest(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_manifest_with_captions_segments_and_cot(dataset, tmp_path, suffix):
    from flows.dub import dub_dataset

    rows = [
        {"id": "w1", "video": "walk.mp4", "caption": "footsteps", "caption_cot": "Start with soft footsteps.",
         "start": "0.2", "duration": "1.0"},
        {"id": "p1", "video": str(dataset / "portrait.mkv"), "caption": "wind", "caption_cot": "",
         "start": "", "duration": ""},
    ]
    manifest = _write_manifest(dataset / f"manifest{suffix}", rows)
    try:
        result = dub_dataset(input=str(manifest), settings=_settings(tmp_path))
    finally:
        manifest.unlink()
    assert result["counts"] == {"succeeded": 2}
    with duckdb.connect(str(tmp_path / "lineage.duckdb"), read_only=True) as con:
        cot = {r[0]: r[1:] for r in con.execute(
            "SELECT source, caption, caption_cot, cot_backend FROM item_cot").fetchall()}
        duration = con.execute(
            "SELECT i.duration_sec, i.start_sec, rs.source_display FROM run_sources rs JOIN items i USING (item_id) "
            "WHERE rs.source = ?", [str(dataset / "walk.mp4")]).fetchone()
    assert cot[str(dataset / "walk.mp4")] == ("footsteps", "Start with soft footsteps.", "provided")
    assert cot[str(dataset / "portrait.mkv")][0] == "wind"
    assert cot[str(dataset / "portrait.mkv")][2] == "template"
    assert duration[:2] == pytest.approx((1.0, 0.2))
    assert duration[2] == "walk.mp4", "the spelling the manifest gave is kept for display"


def test_s3_store_and_s3_inputs(dataset, tmp_path, s3_server, monkeypatch):  # noqa: F811 - pytest fixture argument
    from flows.dub import dub_dataset
    from tasks.config import S3Settings

    bucket = new_bucket_name()
    client = s3_server.client()
    client.make_bucket(bucket)
    client.fput_object(bucket, "incoming/walk.mp4", str(dataset / "walk.mp4"))
    uri = f"s3://{bucket}/incoming/walk.mp4"
    manifest = _write_manifest(tmp_path / "m.csv", [{"video": uri, "caption": "steps"}])
    config = s3_server.config()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", config.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", config.secret_key)
    settings = _settings(tmp_path / "w", store=f"s3://{bucket}/dubbing", s3=S3Settings(endpoint=config.endpoint))
    result = dub_dataset(input=str(manifest), settings=settings)
    assert result["counts"] == {"succeeded": 1}
    row = _status(tmp_path / "w")[uri]
    for key in ("audio_uri", "video_uri"):
        assert row[key].startswith(f"s3://{bucket}/dubbing/outputs/")
        client.stat_object(bucket, row[key].removeprefix(f"s3://{bucket}/"))
    assert not (tmp_path / "w" / "artifacts").exists()


def test_clips_shorter_than_a_second_are_generated_at_one_second_and_trimmed(tmp_path):
    from flows.dub import dub_dataset

    video = make_video(tmp_path / "short.mp4", duration=0.7)
    result = dub_dataset(input=str(video), settings=_settings(tmp_path / "w"))
    assert result["counts"] == {"succeeded": 1}, result["items"]
    info = soundfile.info(str(_local(result["items"][0]["audio_uri"])))
    assert abs(info.duration - 0.7) < 0.05


def test_outputs_written_before_a_crash_are_adopted_not_redone(dataset, tmp_path):
    """A run killed after writing an item's files but before recording them in lineage loses nothing."""
    from flows.dub import dub_dataset

    clip = str(dataset / "portrait.mkv")
    first = dub_dataset(input=clip, settings=_settings(tmp_path))
    assert first["counts"] == {"succeeded": 1}
    with duckdb.connect(str(tmp_path / "lineage.duckdb")) as con:
        con.execute("DELETE FROM cache WHERE key LIKE 'published:%'")
        con.execute("DELETE FROM metrics")

    again = dub_dataset(input=clip, settings=_settings(tmp_path))
    assert again["counts"] == {"succeeded": 1} and again["cached"] == 1
    assert _count(tmp_path, "SELECT count(*) FROM stage_attempts WHERE stage = 'synthesis'") == 1
    assert _count(tmp_path, "SELECT count(*) FROM cache WHERE key LIKE 'published:%'") == 1
    assert _count(tmp_path, "SELECT count(*) FROM metrics WHERE run_id = ? AND name = 'final_loudness_lufs'",
                  [again["run_id"]]) == 1


def test_an_unreadable_metrics_file_from_a_crash_means_the_item_is_redone(dataset, tmp_path):
    from flows.dub import dub_dataset

    clip = str(dataset / "portrait.mkv")
    first = dub_dataset(input=clip, settings=_settings(tmp_path))
    with duckdb.connect(str(tmp_path / "lineage.duckdb")) as con:
        con.execute("DELETE FROM cache WHERE key LIKE 'published:%'")
    _local(first["items"][0]["metrics_uri"]).write_text("{not json")

    again = dub_dataset(input=clip, settings=_settings(tmp_path))
    assert again["counts"] == {"succeeded": 1} and again["cached"] == 0
    assert _count(tmp_path, "SELECT count(*) FROM stage_attempts WHERE stage = 'synthesis'") == 2
    assert json.loads(_local(again["items"][0]["metrics_uri"]).read_text())["item_id"]


def test_a_batch_stage_retries_transient_errors_only():
    from storage import TransientStorageError
    from tasks.retry import with_transient_retries

    calls = []

    def fails_twice() -> str:
        calls.append("call")
        if len(calls) < 3:
            raise TransientStorageError("S3 timed out")
        return "done"

    assert with_transient_retries(fails_twice, retries=2, delay_s=0) == "done" and len(calls) == 3
    calls.clear()
    with pytest.raises(TransientStorageError):
        with_transient_retries(fails_twice, retries=1, delay_s=0)
    assert len(calls) == 2

    def bad_input() -> None:
        calls.append("call")
        raise ValueError("not a video")

    calls.clear()
    with pytest.raises(ValueError):
        with_transient_retries(bad_input, retries=2, delay_s=0)
    assert len(calls) == 1


def test_task_runs_belong_to_the_flow_run_and_carry_the_batch_id(first_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    workdir, result = first_run
    run_id = result["run_id"]
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        flow_run_id = con.execute("SELECT prefect_flow_run_id FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    names = {t.name for t in task_runs}
    # One task run per batch (its model stages and publishing), one per chunk for ingest and CoT.
    assert f"batch-{run_id}-b0000" in names, sorted(names)
    assert not any(name.startswith(("features-", "synthesis-", "quality-", "publish-")) for name in names)
    assert f"ingest-{run_id}-ingest000" in names and f"cot-{run_id}-c000" in names, sorted(names)
    assert all(t.state and t.state.is_completed() for t in task_runs), [(t.name, t.state) for t in task_runs]


def test_a_run_interrupted_mid_batch_keeps_the_batch_being_published(dataset, tmp_path):
    """The previous batch is still publishing in the background when the next one fails: it is kept."""
    from flows.dub import dub_dataset
    from flows.report import stage_listeners

    folder = tmp_path / "two"
    folder.mkdir()
    shutil.copy(dataset / "walk.mp4", folder / "a.mp4")
    shutil.copy(dataset / "portrait.mkv", folder / "b.mkv")
    started: list[str] = []

    def interrupt_second_batch(stage: str) -> None:
        started.append(stage)
        if started.count("features") == 2:
            raise KeyboardInterrupt("operator stopped the run")

    settings = _settings(tmp_path / "w").model_copy(update={"batch_size": 1})
    stage_listeners.append(interrupt_second_batch)
    try:
        with pytest.raises(KeyboardInterrupt):
            dub_dataset(input=str(folder), settings=settings)
    finally:
        stage_listeners.remove(interrupt_second_batch)
    workdir = tmp_path / "w"
    assert _count(workdir, "SELECT count(*) FROM cache WHERE key LIKE 'published:%'") == 1
    assert [r["status"] for r in _status(workdir).values()].count("succeeded") == 1
    assert _count(workdir, "SELECT count(*) FROM runs WHERE status = 'crashed'") == 1

    again = dub_dataset(input=str(folder), settings=settings)
    assert again["counts"] == {"succeeded": 2} and again["cached"] == 1


def test_items_published_before_a_failure_in_the_same_batch_are_recorded(dataset, tmp_path):
    from flows.dub import dub_dataset
    from flows.report import stage_listeners
    from storage import ArtifactNotFound

    folder = tmp_path / "two"
    folder.mkdir()
    shutil.copy(dataset / "portrait.mkv", folder / "a_first.mkv")
    shutil.copy(dataset / "walk.mp4", folder / "b_second.mp4")
    # The result key depends only on the content and the settings: learn the second item's from a run alone.
    alone = dub_dataset(input=str(folder / "b_second.mp4"), settings=_settings(tmp_path / "alone"))
    second_key = _local(alone["items"][0]["metrics_uri"]).parent.name
    workdir = tmp_path / "w"

    def lose_second_raw_audio(stage: str) -> None:
        if stage == "publish":
            shutil.rmtree(workdir / "artifacts" / "work" / "audio" / second_key)

    stage_listeners.append(lose_second_raw_audio)
    try:
        with pytest.raises(ArtifactNotFound):
            dub_dataset(input=str(folder), settings=_settings(workdir))
    finally:
        stage_listeners.remove(lose_second_raw_audio)
    assert _count(workdir, "SELECT count(*) FROM cache WHERE key LIKE 'published:%'") == 1
    assert _count(workdir, "SELECT count(*) FROM stage_attempts WHERE stage = 'publish' AND status = 'succeeded'") == 1
    assert _count(workdir, "SELECT count(DISTINCT item_id) FROM artifacts") == 1
    status = _status(workdir)
    assert status[str(folder / "a_first.mkv")]["status"] == "succeeded"
    assert status[str(folder / "b_second.mp4")]["status"] == "failed"
