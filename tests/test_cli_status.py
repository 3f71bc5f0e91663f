"""`thinksound status` on a real lineage file, in real subprocesses: a table that fits 80 columns, JSON
for scripts (errors included), and an immediate, clear answer while a run holds the lineage file."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from storage import Lineage

THINKSOUND = str(Path(sys.executable).with_name("thinksound"))
RUN_ID = "run-20261201-151302-70da29"
LOCKED = "a run is writing this lineage; try again or use the shared lineage backend"


def _status(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(COLUMNS="80", HF_HUB_OFFLINE="1")
    return subprocess.run(
        [THINKSOUND, "status", "--workdir", str(workdir), *args], env=env, capture_output=True, text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("status")
    started = dt.datetime(2026, 12, 1, 15, 13, 2, tzinfo=dt.UTC)
    with Lineage.open(workdir / "lineage.duckdb") as lin:
        lin.start_run(RUN_ID, input="/data/incoming/a-rather-long-folder-name", params={}, started_at=started)
        lin.add_sources(RUN_ID, [{"source": f"/data/v{n}.mp4", "item_id": f"i{n}", "position": n} for n in range(3)])
        lin.set_item_states(RUN_ID, [
            {"source": "/data/v0.mp4", "item_id": "i0", "status": "succeeded", "stage": "publish"},
            {"source": "/data/v1.mp4", "item_id": "i1", "status": "succeeded", "stage": "publish"},
            {"source": "/data/v2.mp4", "item_id": "i2", "status": "failed", "stage": "ingest", "error": "not a video"},
        ])
        lin.finish_run(RUN_ID, "completed", finished_at=started + dt.timedelta(seconds=12.345))
    return workdir


def test_status_table_fits_80_columns_with_the_run_id_whole(workdir):
    done = _status(workdir)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert "…" not in done.stdout
    header, row = lines[0].split(), lines[1].split()
    assert header[:3] == ["run", "id", "started"]
    assert row[0] == RUN_ID and "12.3" in row and row[-4:-2] == ["2", "1"], row


def test_status_json_keeps_every_column_and_answers_errors_in_json(workdir, tmp_path):
    done = _status(workdir, "--json")
    (run,) = json.loads(done.stdout)
    assert run["run_id"] == RUN_ID and run["n_succeeded"] == 2 and run["n_failed"] == 1

    missing = _status(tmp_path / "nowhere", "--json")
    assert missing.returncode == 1
    assert "no lineage database" in json.loads(missing.stdout)["error"]


def test_status_says_at_once_that_a_run_holds_the_lineage(workdir):
    writer = duckdb.connect(str(workdir / "lineage.duckdb"))
    try:
        started = time.monotonic()
        busy = _status(workdir)
        busy_json = _status(workdir, "--json")
        elapsed = time.monotonic() - started
    finally:
        writer.close()
    assert busy.returncode == 1 and LOCKED in " ".join(busy.stderr.split()), busy.stderr
    assert "Traceback" not in busy.stderr
    assert LOCKED in json.loads(busy_json.stdout)["error"]
    assert elapsed < 40, "two answers, each without the 60 s wait for the lock"
