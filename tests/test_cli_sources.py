"""Source identity through the `thinksound` command, in real subprocesses started from different folders."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
from media import make_video

THINKSOUND = str(Path(sys.executable).with_name("thinksound"))


def _run(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    return subprocess.run([THINKSOUND, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_sources_are_found_from_any_folder_and_any_spelling(tmp_path):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "mixed").mkdir(parents=True)
    elsewhere.mkdir()
    make_video(project / "mixed" / "x.mp4", duration=1.0, size="32x32")
    (project / "mixed" / "broken.mp4").write_bytes(b"not a video")
    workdir = tmp_path / "w"

    first = _run("run", "mixed", "--preset", "tiny", "--workdir", str(workdir), "--steps", "2", cwd=project)
    assert first.returncode == 0, first.stderr[-3000:]
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        recorded = dict(con.execute("SELECT source_display, source FROM run_sources").fetchall())
    assert recorded == {"mixed/x.mp4": str(project / "mixed" / "x.mp4"),
                        "mixed/broken.mp4": str(project / "mixed" / "broken.mp4")}

    for spelling in (str(project / "mixed" / "x.mp4"), "../project/mixed/./x.mp4", "../project/mixed/../mixed/x.mp4"):
        history = _run("lineage", spelling, "--workdir", str(workdir), "--json", cwd=elsewhere)
        assert history.returncode == 0, (spelling, history.stderr[-2000:])
        assert '"stage": "synthesis"' in history.stdout, spelling

    shutil.copy(project / "mixed" / "x.mp4", project / "mixed" / "broken.mp4")
    again = _run("reprocess", "--workdir", str(workdir), cwd=elsewhere)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "input not found" not in again.stderr
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        status = dict(con.execute("SELECT source, status FROM item_status").fetchall())
    assert status == {str(project / "mixed" / "x.mp4"): "succeeded", str(project / "mixed" / "broken.mp4"): "succeeded"}


def test_segments_of_one_video_are_counted_once_each(tmp_path):
    make_video(tmp_path / "clip03.mp4", duration=3.0, size="32x32")
    (tmp_path / "m.csv").write_text("video,start,duration\nclip03.mp4,0,1\nclip03.mp4,1.5,1\n")
    done = _run("run", "m.csv", "--preset", "tiny", "--workdir", "w", "--steps", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 succeeded" in done.stderr, done.stderr[-2000:]
    with duckdb.connect(str(tmp_path / "w" / "lineage.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT start_sec, duration_sec, status FROM item_status ORDER BY start_sec").fetchall()
    assert rows == [(0.0, 1.0, "succeeded"), (1.5, 1.0, "succeeded")]


def test_a_missing_or_empty_input_is_one_line_and_exit_2(tmp_path):
    missing = _run("run", str(tmp_path / "nowhere"), "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert missing.returncode == 2
    assert f"{tmp_path / 'nowhere'} does not exist" in " ".join(missing.stderr.split())  # rich wraps lines
    assert "Traceback" not in missing.stderr + missing.stdout
    (tmp_path / "empty").mkdir()
    empty = _run("run", "empty", "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert empty.returncode == 2 and "no inputs" in empty.stderr
    assert "Traceback" not in empty.stderr + empty.stdout
