"""`thinksound run` then `thinksound reprocess` as an operator runs them, in real subprocesses with the
embedded Prefect API: reprocessing keeps the failed run's settings, and Prefect shows what happened."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from media import make_video

THINKSOUND = str(Path(sys.executable).with_name("thinksound"))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    return env


def thinksound(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [THINKSOUND, *args], env=_env(), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def prefect_flow_runs(workdir: Path) -> list[dict]:
    """Name, final state and state message of every flow run, from the embedded API's database."""
    with sqlite3.connect(workdir / "prefect" / "prefect.db") as con:
        con.row_factory = sqlite3.Row
        rows = con.execute(
            "SELECT f.name AS flow, r.name, r.state_type, s.message FROM flow_run r "
            "JOIN flow f ON f.id = r.flow_id JOIN flow_run_state s ON s.id = r.state_id ORDER BY r.created"
        ).fetchall()
    return [dict(r) for r in rows]


def prefect_logs(workdir: Path) -> list[str]:
    with sqlite3.connect(workdir / "prefect" / "prefect.db") as con:
        return [r[0] for r in con.execute("SELECT message FROM log ORDER BY timestamp")]


@pytest.fixture(scope="module")
def failed_then_reprocessed(tmp_path_factory):
    """A run with non-default settings and one broken file; the file is fixed, then reprocessed with
    no option from another working directory."""
    root = tmp_path_factory.mktemp("reprocess")
    videos = root / "videos"
    videos.mkdir()
    make_video(videos / "fine.mp4", duration=1.2, size="32x32")
    (videos / "later.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    # Relative paths, as typed in a shell: the reprocess below runs from another directory.
    first = thinksound(
        "run", "videos", "--preset", "tiny", "--workdir", "w", "--steps", "4", "--seed", "7",
        "--cfg-scale", "2", cwd=root,
    )
    make_video(videos / "later.mp4", duration=1.0, size="32x32")
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    second = thinksound("reprocess", "--workdir", str(root / "w"), cwd=elsewhere)
    return root / "w", videos, first, second


def test_reprocess_reruns_with_the_settings_of_the_failed_run(failed_then_reprocessed):
    workdir, videos, first, second = failed_then_reprocessed
    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        status = dict(con.execute("SELECT source, status FROM item_status").fetchall())
        latest_run = con.execute("SELECT params FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()[0]
        audio_uri = con.execute(
            "SELECT audio_uri FROM item_status WHERE source LIKE '%later.mp4'"
        ).fetchone()[0]
    assert set(status.values()) == {"succeeded"} and len(status) == 2, status
    metrics = json.loads(Path(audio_uri.removeprefix("file://")).with_name("metrics.json").read_text())
    assert metrics["params"]["steps"] == 4
    assert metrics["params"]["cfg_scale"] == 2
    assert metrics["params"]["preset"] == "tiny"
    assert metrics["params"]["seed"] == 7
    recorded = json.loads(latest_run)
    assert recorded["reprocess"]["overrides"] == {}
    assert recorded["steps"] == 4


def test_flow_runs_end_with_counts_and_are_named_after_run_and_input(failed_then_reprocessed):
    workdir, _, first, _ = failed_then_reprocessed
    runs = prefect_flow_runs(workdir)
    by_flow = {r["flow"]: r for r in runs}
    dataset, reprocess = by_flow["dub_dataset"], by_flow["reprocess_failed"]
    assert dataset["message"] == "1 succeeded, 1 failed" and dataset["state_type"] == "COMPLETED"
    assert reprocess["message"] == "1 succeeded" and reprocess["state_type"] == "COMPLETED"
    run_id = re.search(r"^run (run-[\w-]+): ", first.stderr, re.MULTILINE).group(1)
    assert dataset["name"] == f"{run_id} videos", dataset
    assert reprocess["name"].startswith("run-") and "reprocess" in reprocess["name"]


def test_each_failed_item_is_one_log_line_with_source_stage_and_reason(failed_then_reprocessed):
    workdir, videos, _, _ = failed_then_reprocessed
    lines = [m for m in prefect_logs(workdir) if str(videos / "later.mp4") in m]
    assert len(lines) == 1 and lines[0].startswith("failed at ingest: "), lines


def test_no_progress_bars_from_model_loading_in_the_logs(failed_then_reprocessed):
    _, _, first, second = failed_then_reprocessed
    for output in (first.stderr, second.stderr):
        assert "Writing model shards" not in output and "Loading weights" not in output
        assert "it/s]" not in output


def test_reprocess_with_nothing_to_do_says_so(failed_then_reprocessed, tmp_path):
    workdir, _, _, _ = failed_then_reprocessed
    done = thinksound("reprocess", "--workdir", str(workdir), "--steps", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "nothing to reprocess" in done.stderr and "run None" not in done.stderr


def test_a_run_where_every_item_failed_ends_failed(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "notes.mp4").write_text("not a video\n")
    done = thinksound("run", str(videos), "--workdir", "w", cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    (run,) = prefect_flow_runs(tmp_path / "w")
    assert run["state_type"] == "FAILED" and run["message"] == "1 failed"
