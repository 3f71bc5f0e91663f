"""Lineage on both backends (a real DuckDB file; a real DuckLake on PostgreSQL): migrations, view
semantics, batching, locking, reprocess selection, merging."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest
from pg_server import lakes, pg_server  # noqa: F401 - the fixtures are used by name

from storage import Lineage, LineageLocked, StateUpdate
from storage.schema import available_migrations

T0 = 1_700_000_000.0


@pytest.fixture(params=["file", "ducklake"])
def open_lineage(request, tmp_path):
    """`open_lineage(name="lineage", **kwargs)` opens this test's lineage `name` on the backend of the param."""
    if request.param == "file":
        return lambda name="lineage", **kwargs: Lineage.open(tmp_path / f"{name}.duckdb", **kwargs)
    factory = request.getfixturevalue("lakes")
    made: dict[str, str] = {}

    def open_lake(name: str = "lineage", **kwargs) -> Lineage:
        if name not in made:
            made[name] = factory.new()
        return Lineage.open(made[name], data_path=str(factory.data_dir), **kwargs)

    return open_lake


@pytest.fixture
def lin(open_lineage):
    handle = open_lineage()
    yield handle
    handle.close()


def _run(lin: Lineage, run_id: str, start: float, sources: dict[str, str | None]) -> None:
    """Start a run at `start` with the given source -> item_id mapping, all pending."""
    lin.start_run(run_id, input="/data", params={"preset": "tiny", "seed": 1}, code_version="test", started_at=start)
    lin.add_sources(run_id, [dict(source=s, item_id=i, position=n) for n, (s, i) in enumerate(sources.items())])
    lin.set_item_states(run_id, [dict(source=s, item_id=i, status="pending", stage="ingest") for s, i in sources.items()])


def _publish(lin: Lineage, run_id: str, item_id: str) -> None:
    for kind in ("audio", "video"):
        lin.record_artifact(item_id, kind, uri=f"file:///out/{run_id}/{item_id}.{kind}", key=f"{item_id}.{kind}",
                            sha256="00" * 32, bytes=10, run_id=run_id)


def _status(lin: Lineage) -> dict[str, dict]:
    return {row["source"]: row for row in lin.item_status()}


def test_migrations_idempotent(open_lineage):
    open_lineage().close()
    with open_lineage() as again:
        applied = again.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        tables = {r["table_name"] for r in again.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database()")}
        columns = [c["column_name"] for c in again.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'item_status' "
            "AND table_catalog = current_database() ORDER BY ordinal_position")]
    assert [r["version"] for r in applied] == [m.version for m in available_migrations()]
    assert {"runs", "items", "run_sources", "stage_attempts", "item_state", "artifacts", "metrics", "cot",
            "cache", "item_status", "failures", "item_cot", "run_summary", "stage_timing"} <= tables
    assert columns[:5] == ["source", "status", "error", "audio_uri", "video_uri"]


def test_file_views_readable_without_this_code(tmp_path):
    path = tmp_path / "lineage.duckdb"
    Lineage.open(path).close()
    with duckdb.connect(str(path), read_only=True) as con:
        columns = [d[0] for d in con.execute("SELECT * FROM item_status").description]
    assert columns[:5] == ["source", "status", "error", "audio_uri", "video_uri"]


def test_latest_run_wins_and_shared_item(lin):
    # Run 1: two names for the same bytes (one item) succeed; a broken file fails at ingest.
    _run(lin, "r1", T0, {"a.mp4": "item1", "copy_of_a.mp4": "item1", "broken.mp4": None})
    lin.upsert_item("item1", content_hash="h1", start_sec=0.0, duration_sec=4.0, probe={"fps": 25})
    _publish(lin, "r1", "item1")
    lin.set_item_states("r1", [
        StateUpdate(source="a.mp4", item_id="item1", status="succeeded", stage="publish"),
        StateUpdate(source="copy_of_a.mp4", item_id="item1", status="succeeded", stage="publish"),
        StateUpdate(source="broken.mp4", status="failed", stage="ingest", error="no video stream"),
    ])
    lin.finish_run("r1", "completed")
    status = _status(lin)
    assert set(status) == {"a.mp4", "copy_of_a.mp4", "broken.mp4"}
    for source in ("a.mp4", "copy_of_a.mp4"):
        assert status[source]["status"] == "succeeded" and status[source]["error"] is None
        assert status[source]["audio_uri"] == "file:///out/r1/item1.audio"
        assert status[source]["video_uri"] == "file:///out/r1/item1.video"
    assert status["broken.mp4"]["status"] == "failed"
    assert status["broken.mp4"]["error"] == "no video stream"
    assert status["broken.mp4"]["audio_uri"] is None and status["broken.mp4"]["item_id"] is None

    # Run 2, later: a.mp4 is now rejected by QC; the broken file was fixed and succeeds.
    _run(lin, "r2", T0 + 100, {"a.mp4": "item1", "broken.mp4": "item2"})
    _publish(lin, "r2", "item2")
    lin.set_item_state("r2", "a.mp4", status="rejected", stage="qc", error="silence ratio 0.98 > 0.9")
    lin.set_item_state("r2", "broken.mp4", status="succeeded", stage="publish", item_id="item2")
    lin.finish_run("r2", "completed")
    status = _status(lin)
    assert len(lin.item_status()) == 3, "one row per source"
    assert status["a.mp4"]["status"] == "rejected" and status["a.mp4"]["run_id"] == "r2"
    assert status["a.mp4"]["error"] == "silence ratio 0.98 > 0.9"
    assert status["a.mp4"]["audio_uri"] is None
    assert status["copy_of_a.mp4"]["status"] == "succeeded" and status["copy_of_a.mp4"]["run_id"] == "r1"
    assert status["broken.mp4"]["status"] == "succeeded" and status["broken.mp4"]["error"] is None
    assert status["broken.mp4"]["audio_uri"] == "file:///out/r2/item2.audio"
    assert {r["source"] for r in lin.failures()} == {"a.mp4"}
    assert lin.item_status("a.mp4")[0]["status"] == "rejected"


def test_crashed_run_leaves_unfinished_sources_failed(tmp_path):
    path = tmp_path / "lineage.duckdb"
    with Lineage.open(path) as lin:
        _run(lin, "r1", T0, {"done.mp4": "i1"})
        lin.set_item_state("r1", "done.mp4", status="succeeded", stage="publish")
        lin.finish_run("r1", "completed")
        _run(lin, "r2", T0 + 10, {"done.mp4": "i1", "new.mp4": "i2"})
        lin.set_item_state("r2", "new.mp4", status="running", stage="synthesis")
        # While r2 runs, an unfinished source with no earlier outcome shows as in progress.
        assert _status(lin)["new.mp4"]["status"] == "running"
        assert _status(lin)["done.mp4"]["status"] == "succeeded"
    # The process "died" without finish_run; the next writer finds r2 still 'running'.
    with Lineage.open(path) as lin:
        assert lin.run_summary("r2")[0]["status"] == "crashed"
        status = _status(lin)
        assert status["done.mp4"]["status"] == "succeeded", "an unfinished rerun does not hide a success"
        assert status["new.mp4"]["status"] == "failed"
        assert "crashed" in status["new.mp4"]["error"] and "synthesis" in status["new.mp4"]["error"]
        picked = lin.select_for_reprocess(run_id="r2")
        assert [(r["source"], r["stage"]) for r in picked] == [("new.mp4", "synthesis")]


def test_failed_then_succeeded_and_reprocess_selection(lin):
    _run(lin, "r1", T0, {"v1.mp4": "i1", "v2.mp4": "i2", "v3.mp4": "i3", "v4.mp4": None})
    lin.add_source("r1", "v1.mp4", item_id="i1", position=0, manifest_id="clip-1", caption="dog", caption_cot="a dog barks")
    lin.set_item_states("r1", [
        dict(source="v1.mp4", status="failed", stage="synthesis", error="CUDA out of memory"),
        dict(source="v2.mp4", status="rejected", stage="qc", error="clipping ratio 0.2 > 0.01"),
        dict(source="v3.mp4", status="succeeded", stage="publish"),
        dict(source="v4.mp4", status="failed", stage="ingest", error="truncated file: moov atom not found"),
    ])
    lin.finish_run("r1", "completed")

    everything = lin.select_for_reprocess()
    assert [r["source"] for r in everything] == ["v1.mp4", "v2.mp4", "v4.mp4"]
    v1 = everything[0]
    assert (v1["item_id"], v1["stage"], v1["manifest_id"], v1["caption"], v1["caption_cot"]) == (
        "i1", "synthesis", "clip-1", "dog", "a dog barks")
    assert [r["source"] for r in lin.select_for_reprocess(stage="qc")] == ["v2.mp4"]
    assert [r["source"] for r in lin.select_for_reprocess(error_contains="OUT OF MEMORY")] == ["v1.mp4"]
    assert [r["source"] for r in lin.select_for_reprocess(statuses=("rejected",))] == ["v2.mp4"]
    assert lin.select_for_reprocess(error_contains="%") == [], "the text is matched literally"
    assert lin.select_for_reprocess(run_id="nope") == []

    # Reprocess run: v1 now succeeds, v2 is rejected again.
    _run(lin, "r2", T0 + 50, {"v1.mp4": "i1", "v2.mp4": "i2"})
    lin.set_item_states("r2", [
        dict(source="v1.mp4", status="succeeded", stage="publish"),
        dict(source="v2.mp4", status="rejected", stage="qc", error="clipping ratio 0.1 > 0.01"),
    ])
    lin.finish_run("r2", "completed")
    assert _status(lin)["v1.mp4"]["status"] == "succeeded" and _status(lin)["v1.mp4"]["error"] is None
    assert [r["source"] for r in lin.select_for_reprocess(run_id="r1")] == ["v4.mp4", "v2.mp4"], "oldest run first"
    again = lin.select_for_reprocess(run_id="r2")
    assert [(r["source"], r["run_id"], r["error"]) for r in again] == [("v2.mp4", "r2", "clipping ratio 0.1 > 0.01")]
    with pytest.raises(ValueError):
        lin.select_for_reprocess(stage="painting")


def test_summary_timing_history_and_cot(lin):
    _run(lin, "r1", T0, {"x.mp4": "ix", "y.mp4": "iy"})
    lin.upsert_item("ix", content_hash="hx", start_sec=0.0, duration_sec=8.0, probe={"codec": "h264"})
    lin.record_attempts([
        dict(run_id="r1", stage="ingest", status="succeeded", item_id="ix", source="x.mp4", started_at=T0,
             finished_at=T0 + 0.5, params={"grid": 0.25}),
        dict(run_id="r1", stage="synthesis", status="succeeded", item_id="ix", started_at=T0 + 1, finished_at=T0 + 3,
             model_version="tiny", details={"batch": "b0"}),
        dict(run_id="r1", stage="synthesis", status="failed", item_id="iy", started_at=T0 + 1, finished_at=T0 + 2,
             error="nan in output"),
        dict(run_id="r1", stage="features", status="cached", item_id="iy", started_at=T0, finished_at=T0),
    ])
    lin.record_cot(run_id="r1", item_id="ix", source="x.mp4", backend="manifest", caption="rain",
                   caption_cot="rain on a roof", t5_tokens=7, parsed={"sounds": ["rain"]})
    lin.record_metrics("r1", "ix", {"lufs": -23.0, "true_peak_db": -1.5})
    _publish(lin, "r1", "ix")
    lin.set_item_states("r1", [dict(source="x.mp4", status="succeeded", stage="publish"),
                               dict(source="y.mp4", status="failed", stage="synthesis", error="nan in output")])
    lin.finish_run("r1", "completed", finished_at=T0 + 10)

    (summary,) = lin.run_summary("r1")
    assert (summary["n_sources"], summary["n_succeeded"], summary["n_failed"], summary["n_rejected"]) == (2, 1, 1, 0)
    assert summary["status"] == "completed" and summary["wall_s"] == pytest.approx(10.0)
    assert summary["n_attempts"] == 4 and summary["n_cached_attempts"] == 1
    timing = {r["stage"]: r for r in lin.stage_timing("r1")}
    assert list(timing) == ["ingest", "features", "synthesis"]
    assert timing["synthesis"]["n"] == 2 and timing["synthesis"]["total_s"] == pytest.approx(3.0)
    assert timing["synthesis"]["n_failed"] == 1

    (cot,) = lin.item_cot("x.mp4")
    assert (cot["caption_cot"], cot["cot_backend"], cot["t5_tokens"]) == ("rain on a roof", "manifest", 7)

    history = lin.item_history("x.mp4")
    events = [e["event"] for e in history]
    assert {"source", "state", "attempt", "artifact", "metric", "cot"} <= set(events)
    assert [e["time"] for e in history] == sorted(e["time"] for e in history)
    attempts = [e for e in history if e["event"] == "attempt"]
    assert {a["stage"] for a in attempts} == {"ingest", "synthesis"}
    assert next(a for a in attempts if a["stage"] == "ingest")["params"] == {"grid": 0.25}
    assert lin.item_history("ix") == history, "an item id and its source give the same history"
    assert lin.artifact("ix", "audio")["uri"] == "file:///out/r1/ix.audio"
    assert lin.artifact("ix", "metrics") is None


def test_cache_and_artifact_latest_wins(lin):
    assert lin.cache_get("features/video:abc") is None
    lin.cache_put("features/video:abc", "features_video", "file:///a")
    lin.cache_put("features/video:abc", "features_video", "file:///b")
    assert lin.cache_get("features/video:abc") == "file:///b"
    lin.cache_put_many([("k1", "t", "u1"), ("k2", "t", "u2"), ("k1", "t", "u3")])
    assert lin.cache_get_many(["k1", "k2", "k3"]) == {"k1": "u3", "k2": "u2"}
    lin.record_artifact("i", "audio", uri="file:///old", key="old", run_id="r1")
    lin.record_artifact("i", "audio", uri="file:///new", key="new", sha256="ff", bytes=5, run_id="r2")
    assert (lin.artifact("i", "audio")["uri"], lin.artifact("i", "audio")["run_id"]) == ("file:///new", "r2")


def test_validation(lin):
    with pytest.raises(ValueError, match="error reason"):
        lin.set_item_state("r", "s", status="failed", stage="qc")
    with pytest.raises(ValueError, match="stage"):
        lin.set_item_state("r", "s", status="pending", stage="mixing")
    with pytest.raises(ValueError):
        lin.record_attempt(run_id="r", stage="qc", status="maybe", started_at=T0, finished_at=T0)
    with pytest.raises(ValueError):
        lin.finish_run("r", "done")
    with pytest.raises(KeyError):
        lin.finish_run("missing-run", "completed")


def test_batched_writes_500_items_and_threads(lin):
    writers, writes = (8, 20) if not lin.shared_backend else (4, 5)  # a DuckLake commit is a catalog round trip
    sources = {f"clip{n:03d}.mp4": f"item{n:03d}" for n in range(500)}
    started = time.perf_counter()
    _run(lin, "big", T0, sources)
    lin.set_item_states("big", [dict(source=s, status="succeeded", stage="publish") for s in sources])
    lin.record_attempts([dict(run_id="big", stage=stage, status="succeeded", item_id=i, started_at=T0, finished_at=T0 + 1)
                         for i in sources.values() for stage in ("features", "synthesis")])
    elapsed = time.perf_counter() - started
    assert lin.run_summary("big")[0]["n_succeeded"] == 500
    assert elapsed < 20, f"batched lineage writes for 500 items took {elapsed:.1f}s"

    def worker(n: int) -> None:
        for k in range(writes):
            lin.record_metrics("big", f"item{n:03d}", {f"m{k}": float(k)})
            lin.set_item_state("big", f"clip{n:03d}.mp4", status="running", stage="qc")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert lin.execute("SELECT count(*) AS n FROM metrics")[0]["n"] == writers * writes


_HOLDER = """
import sys
from storage import Lineage
lin = Lineage.open(sys.argv[1])
print("locked", flush=True)
sys.stdin.readline()
lin.close()
"""


def test_second_process_waits_then_fails_clearly(tmp_path):
    path = tmp_path / "lineage.duckdb"
    Lineage.open(path).close()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == b"locked"
        started = time.monotonic()
        with pytest.raises(LineageLocked, match="one writer per file") as info:
            Lineage.open(path, timeout_s=0.6, poll_s=0.1)
        assert time.monotonic() - started >= 0.6, "it retried until the timeout"
        assert str(path) in str(info.value)

        opened: list[Lineage] = []
        waiter = threading.Thread(target=lambda: opened.append(Lineage.open(path, timeout_s=30, poll_s=0.05)))
        waiter.start()
        time.sleep(0.3)
        assert not opened, "still waiting for the holder"
        holder.stdin.write(b"release\n")
        holder.stdin.flush()
        waiter.join(timeout=30)
        assert opened, "the lock was acquired once the holder closed"
        opened[0].close()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=30)


def test_read_only_open(tmp_path, open_lineage):
    with pytest.raises(FileNotFoundError):
        Lineage.open(tmp_path / "none.duckdb", read_only=True)
    with open_lineage() as lin:
        _run(lin, "r1", T0, {"a.mp4": "i"})
    with open_lineage(read_only=True) as reader:
        assert reader.run_summary()[0]["run_id"] == "r1"


def test_shared_instance_per_process(tmp_path):
    path = tmp_path / "lineage.duckdb"
    first = Lineage.shared(path)
    try:
        assert Lineage.shared(str(path)) is first
    finally:
        first.close()
    second = Lineage.shared(path)
    assert second is not first
    second.close()


def test_merge_concurrent_workdirs(tmp_path, open_lineage):
    """Two runs write their own files (one writer each); both fold into a central lineage (a file, or a
    DuckLake as `thinksound lineage-import` does)."""
    with Lineage.open(tmp_path / "w1" / "lineage.duckdb") as one:
        _run(one, "r1", T0, {"shared.mp4": "i1", "only1.mp4": "i2"})
        one.set_item_states("r1", [dict(source="shared.mp4", status="failed", stage="qc", error="too quiet"),
                                   dict(source="only1.mp4", status="succeeded", stage="publish")])
        _publish(one, "r1", "i2")
        _publish(one, "r1", "i1")  # older than w2's artifacts of i1, so it must not win the merge
        one.record_cot(run_id="r1", source="only1.mp4", backend="manifest", caption_cot="birds")
        one.cache_put("k", "features_video", "file:///one")
        one.finish_run("r1", "completed")
    with Lineage.open(tmp_path / "w2" / "lineage.duckdb") as two:
        _run(two, "r2", T0 + 60, {"shared.mp4": "i1"})
        two.set_item_state("r2", "shared.mp4", status="succeeded", stage="publish")
        _publish(two, "r2", "i1")
        two.record_attempt(run_id="r2", stage="synthesis", status="succeeded", item_id="i1", started_at=T0 + 61,
                           finished_at=T0 + 62)
        two.finish_run("r2", "completed")
    with open_lineage("central") as central:
        central.merge_from(tmp_path / "w2" / "lineage.duckdb")
        counts = central.merge_from(tmp_path / "w1" / "lineage.duckdb")
        assert counts["runs"] == 1 and counts["item_state"] == 2
        central.merge_from(tmp_path / "w1" / "lineage.duckdb")
        status = _status(central)
        assert status["shared.mp4"]["status"] == "succeeded" and status["shared.mp4"]["run_id"] == "r2"
        assert status["shared.mp4"]["audio_uri"] == "file:///out/r2/i1.audio"
        assert status["only1.mp4"]["status"] == "succeeded"
        assert {r["run_id"] for r in central.run_summary()} == {"r1", "r2"}
        assert central.execute("SELECT count(*) AS n FROM cot")[0]["n"] == 1, "merging twice adds nothing"
        assert central.execute("SELECT count(*) AS n FROM stage_attempts")[0]["n"] == 1
        assert central.cache_get("k") == "file:///one"
    with Lineage.open(tmp_path / "central.duckdb") as central, pytest.raises(ValueError):
        central.merge_from(tmp_path / "central.duckdb")


def test_attempts_keep_the_worker_that_ran_them(tmp_path):
    path = tmp_path / "lineage.duckdb"
    with duckdb.connect(str(path)) as con:  # a database made before the worker column existed
        from storage.schema import migrate

        con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
                    " applied_at TIMESTAMP NOT NULL DEFAULT (now()::TIMESTAMP))")
        for migration in available_migrations():
            if migration.name in ("tables", "views"):
                con.execute(migration.sql)
                con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                            [migration.version, migration.name])
        con.execute("INSERT INTO stage_attempts (attempt_id, run_id, stage, status, started_at, finished_at,"
                    " duration_s) VALUES ('old', 'r0', 'ingest', 'succeeded', now(), now(), 0)")
        migrate(con)
    with Lineage.open(path) as lin:
        lin.record_attempts([dict(run_id="r1", stage="ingest", status="succeeded", item_id="i", started_at=T0,
                                  finished_at=T0, worker="node-7:4242")])
        rows = lin.execute("SELECT attempt_id, worker FROM stage_attempts ORDER BY run_id")
    assert [r["worker"] for r in rows] == [None, "node-7:4242"]
