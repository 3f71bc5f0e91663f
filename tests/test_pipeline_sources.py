"""Every input ends as a row: segments of one video, bad manifest values, unreadable directory entries,
inputs outside the input roots, and a cached rerun that says so. Real flows, Prefect API and DuckDB."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import duckdb
import pytest
from media import make_video

pytestmark = pytest.mark.usefixtures("prefect_harness")

MAX_DURATION = 2.0


def _settings(workdir: Path, **overrides):
    from tasks.config import PipelineSettings

    return PipelineSettings(workdir=str(workdir), steps=2, batch_size=8, max_duration_sec=MAX_DURATION, **overrides)


def _rows(workdir: Path, sql: str, params: list | None = None) -> list[dict]:
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        cursor = con.execute(sql, params or [])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["video", "start", "duration"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def manifest_run(tmp_path_factory):
    """One manifest: two segments of one video, a whole short video, bad values, and a path outside."""
    from flows.dub import dub_dataset

    root = tmp_path_factory.mktemp("sources")
    data = root / "data"
    data.mkdir()
    make_video(data / "clip03.mp4", duration=3.0, size="32x32")
    make_video(data / "short.mp4", duration=1.2, size="32x32")
    (root / "outside").mkdir()
    make_video(root / "outside" / "secret.mp4", duration=1.0, size="32x32")
    manifest = _write_csv(data / "m.csv", [
        {"video": "clip03.mp4", "start": "0", "duration": "1"},
        {"video": "clip03.mp4", "start": "1.5", "duration": "1"},
        {"video": "short.mp4", "start": "", "duration": ""},
        {"video": "clip03.mp4", "start": "-1", "duration": "1"},
        {"video": "clip03.mp4", "start": "nan", "duration": "1"},
        {"video": "clip03.mp4", "start": "abc", "duration": "1"},
        {"video": "clip03.mp4", "start": "0", "duration": "0"},
        {"video": "clip03.mp4", "start": "0", "duration": "65"},
        {"video": "../outside/secret.mp4", "start": "", "duration": ""},
        {"video": "", "start": "", "duration": ""},
    ])
    workdir = root / "w"
    first = dub_dataset(input=str(manifest), settings=_settings(workdir))
    again = dub_dataset(input=str(manifest), settings=_settings(workdir))
    return data, workdir, first, again


def test_two_segments_of_one_video_keep_their_rows(manifest_run):
    data, workdir, first, _ = manifest_run
    clip = str(data / "clip03.mp4")
    rows = _rows(workdir, "SELECT start_sec, duration_sec, status FROM item_status WHERE source = ? "
                          "AND status = 'succeeded' ORDER BY start_sec", [clip])
    assert [(r["start_sec"], r["duration_sec"]) for r in rows] == [(0.0, 1.0), (1.5, 1.0)]
    whole = _rows(workdir, "SELECT start_sec, duration_sec, status FROM item_status WHERE source = ?",
                  [str(data / "short.mp4")])
    assert len(whole) == 1 and whole[0]["status"] == "succeeded"
    assert whole[0]["start_sec"] == 0 and whole[0]["duration_sec"] == pytest.approx(1.2, abs=0.05)
    succeeded = [i for i in first["items"] if i["status"] == "succeeded"]
    assert sorted((i["source"], i["start_sec"]) for i in succeeded) == [
        (clip, 0.0), (clip, 1.5), (str(data / "short.mp4"), 0.0)]


def test_every_manifest_row_is_a_row(manifest_run):
    _, workdir, first, _ = manifest_run
    assert len(first["items"]) == 10
    assert first["counts"] == {"succeeded": 3, "failed": 7}
    run_id = first["run_id"]
    assert len(_rows(workdir, "SELECT * FROM run_sources WHERE run_id = ?", [run_id])) == 10
    assert len(_rows(workdir, "SELECT * FROM item_state WHERE run_id = ?", [run_id])) == 10
    summary = _rows(workdir, "SELECT n_sources, n_succeeded, n_failed FROM run_summary WHERE run_id = ?", [run_id])
    assert summary == [{"n_sources": 10, "n_succeeded": 3, "n_failed": 7}]


@pytest.mark.parametrize(("start", "duration", "reason"), [
    ("-1", "1", "'start' must be a finite number >= 0"),
    ("nan", "1", "'start' must be a finite number >= 0"),
    ("abc", "1", "'start' is not a number"),
    ("0", "0", "'duration' is 0"),
    ("0", "65", "above the limit of 2 s"),
])
def test_a_bad_row_value_fails_that_row_with_its_reason(manifest_run, start, duration, reason):
    _, _, first, _ = manifest_run
    by_row = {(i["source_display"], i["segment"].split("#")[0]): i for i in first["items"]}
    segment = f"{start}+{duration}" if reason != "above the limit of 2 s" else "0+65"
    item = by_row[("clip03.mp4", segment)]
    assert item["status"] == "failed" and reason in item["error"], item


def test_a_row_outside_the_input_roots_fails_before_it_is_read(manifest_run):
    data, workdir, first, _ = manifest_run
    secret = str(data.parent / "outside" / "secret.mp4")
    item = next(i for i in first["items"] if i["source"] == secret)
    assert item["status"] == "failed" and item["error"].startswith("input_outside_roots"), item
    attempts = _rows(workdir, "SELECT input_hash FROM stage_attempts WHERE source = ?", [secret])
    assert attempts and all(a["input_hash"] is None for a in attempts)
    hashed = _rows(workdir, "SELECT key FROM cache WHERE key LIKE ?", [f"file-sha256:{secret}:%"])
    assert hashed == [], "no hash of a file outside the roots is kept"


def test_an_empty_video_value_is_a_failed_row(manifest_run):
    _, _, first, _ = manifest_run
    item = next(i for i in first["items"] if "#row=9" in i["source"])
    assert item["status"] == "failed" and "empty 'video'" in item["error"]


def test_a_fully_cached_rerun_counts_every_reused_item(manifest_run):
    _, workdir, first, again = manifest_run
    assert again["cached"] == 3
    summary = {r["run_id"]: r for r in _rows(workdir, "SELECT run_id, n_items_fully_cached FROM run_summary")}
    assert summary[first["run_id"]]["n_items_fully_cached"] == 0
    assert summary[again["run_id"]]["n_items_fully_cached"] == 3


def test_an_explicit_input_root_admits_a_folder_outside_the_manifest(manifest_run, tmp_path):
    from flows.dub import RunFailed, dub_dataset

    data, _, _, _ = manifest_run
    manifest = _write_csv(tmp_path / "m.csv", [{"video": str(data / "short.mp4"), "start": "", "duration": ""}])
    with pytest.raises(RunFailed) as refused:
        dub_dataset(input=str(manifest), settings=_settings(tmp_path / "w1"))
    assert refused.value.result["items"][0]["error"].startswith("input_outside_roots")
    admitted = dub_dataset(input=str(manifest), settings=_settings(tmp_path / "w2", input_roots=(str(data),)))
    assert admitted["counts"] == {"succeeded": 1}


def test_every_directory_entry_is_a_row(tmp_path):
    from flows.dub import dub_dataset

    folder = tmp_path / "in"
    folder.mkdir()
    make_video(folder / "good.mp4", duration=1.0, size="32x32")
    os.symlink(folder / "missing.mp4", folder / "dangling.mp4")
    os.symlink(folder / "loop_b.mp4", folder / "loop_a.mp4")
    os.symlink(folder / "loop_a.mp4", folder / "loop_b.mp4")
    (folder / "sub").mkdir()
    (tmp_path / "private").mkdir()
    make_video(tmp_path / "private" / "elsewhere.mp4", duration=1.0, size="32x32")
    os.symlink(tmp_path / "private" / "elsewhere.mp4", folder / "link_out.mp4")
    with (folder / "huge.mp4").open("wb") as handle:  # 10 GB, sparse: hashing it would take many seconds
        handle.truncate(10 * 2**30)

    result = dub_dataset(input=str(folder), settings=_settings(tmp_path / "w"))
    by_name = {Path(i["source"]).name: i for i in result["items"]}
    assert set(by_name) == {"good.mp4", "dangling.mp4", "loop_a.mp4", "loop_b.mp4", "sub", "link_out.mp4",
                            "huge.mp4"}
    assert by_name["good.mp4"]["status"] == "succeeded"
    expected = {"dangling.mp4": "dangling symlink", "loop_a.mp4": "symlink loop", "loop_b.mp4": "symlink loop",
                "sub": "is a directory", "link_out.mp4": "input_outside_roots", "huge.mp4": "not a readable media"}
    for name, reason in expected.items():
        assert by_name[name]["status"] == "failed" and reason in by_name[name]["error"], by_name[name]
    status = {Path(r["source"]).name: r for r in _rows(tmp_path / "w", "SELECT source, status, error FROM item_status")}
    assert {n: r["status"] for n, r in status.items()} == {n: i["status"] for n, i in by_name.items()}
    huge = str(folder / "huge.mp4")
    assert _rows(tmp_path / "w", "SELECT key FROM cache WHERE key LIKE ?", [f"file-sha256:{huge}:%"]) == [], (
        "a file that is not a video is rejected by its probe, before it is hashed")


def test_an_empty_input_says_no_inputs(tmp_path):
    from tasks.sources import ManifestError, list_sources

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("video,start,duration\n")
    for name in ("empty", "empty.csv", "header.csv"):
        with pytest.raises(ManifestError, match="no inputs"):
            list_sources(str(tmp_path / name))
    with pytest.raises(ManifestError, match="does not exist"):
        list_sources(str(tmp_path / "missing"))


def test_reprocessing_keeps_each_rows_segment_values_and_roots(manifest_run):
    from flows.dub import RunFailed
    from flows.reprocess import reprocess_failed

    _, workdir, first, _ = manifest_run
    with pytest.raises(RunFailed) as failed:  # every item it reran failed
        reprocess_failed(workdir=str(workdir))
    again = failed.value.result
    assert again["counts"] == {"failed": 7}
    before = {(i["source"], i["segment"]): i["error"] for i in first["items"] if i["status"] == "failed"}
    after = {(i["source"], i["segment"]): i["error"] for i in again["items"]}
    assert after == before, "each row fails again for its own reason, under its own segment"
    assert len(_rows(workdir, "SELECT * FROM item_status")) == 10
