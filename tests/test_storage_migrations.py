"""Lineage files written by earlier versions keep working: segments and absolute sources are migrated."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb

from storage import Lineage
from storage.schema import available_migrations

T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def _old_database(
    path: Path, *, runs: dict[str, str], sources: dict[str, list[str]], versions: tuple[int, ...] = (1, 2)
) -> None:
    """A lineage file as an earlier version wrote it (migrations `versions` applied): sources spelled as
    the user typed them."""
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
                    "applied_at TIMESTAMP NOT NULL DEFAULT (now()::TIMESTAMP))")
        for migration in (m for m in available_migrations() if m.version in versions):
            con.execute(migration.sql)
            con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                        [migration.version, migration.name])
        for n, (run_id, run_input) in enumerate(runs.items()):
            con.execute("INSERT INTO runs (run_id, started_at, status, input) VALUES (?, ?, 'completed', ?)",
                        [run_id, T0 + dt.timedelta(minutes=n), run_input])
            for position, source in enumerate(sources[run_id]):
                item_id = f"{run_id}-{position}"
                con.execute("INSERT INTO items VALUES (?, 'hash', 0.5, 1.0, NULL, ?)", [item_id, T0])
                con.execute("INSERT INTO run_sources (run_id, source, item_id, position) VALUES (?, ?, ?, ?)",
                            [run_id, source, item_id, position])
                con.execute("INSERT INTO item_state VALUES (?, ?, ?, 'failed', 'ingest', 'boom', ?)",
                            [run_id, source, item_id, T0])
                con.execute("INSERT INTO stage_attempts (attempt_id, run_id, item_id, source, stage, status, "
                            "started_at, finished_at, duration_s) VALUES (?, ?, ?, ?, 'ingest', 'failed', ?, ?, 0)",
                            [item_id, run_id, item_id, source, T0, T0])


def test_old_relative_sources_become_absolute_where_they_can_be_found(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "clips").mkdir(parents=True)
    (data / "clips" / "a.mp4").write_bytes(b"x")
    (data / "mixed").mkdir()
    (data / "mixed" / "b.mp4").write_bytes(b"x")
    manifest = data / "m.csv"
    path = tmp_path / "w" / "lineage.duckdb"
    path.parent.mkdir()
    _old_database(
        path,
        runs={"r1": str(manifest), "r2": "mixed", "r3": "reprocess(from_run=None, stage=None)"},
        sources={"r1": ["clips/a.mp4", "s3://bucket/v.mp4"], "r2": ["mixed/b.mp4", "gone/c.mp4"],
                 "r3": ["clips/a.mp4"]},
    )
    monkeypatch.chdir(data)  # run r2 was started here, with a relative input

    with Lineage.open(path, read_only=True) as lin:  # a read-only open migrates an old file first
        rows = {(r["run_id"], r["source_display"]): r for r in lin.execute(
            "SELECT s.*, rs.source_display FROM item_state s JOIN run_sources rs USING (run_id, source, segment)")}
        attempts = {r["source"] for r in lin.execute("SELECT source FROM stage_attempts")}
        status = lin.item_status()
        version = lin.execute("SELECT max(version) AS v FROM schema_migrations")[0]["v"]

    assert version == available_migrations()[-1].version
    assert rows[("r1", "clips/a.mp4")]["source"] == str(data / "clips" / "a.mp4")
    assert rows[("r1", "s3://bucket/v.mp4")]["source"] == "s3://bucket/v.mp4"
    assert rows[("r2", "mixed/b.mp4")]["source"] == str(data / "mixed" / "b.mp4")
    assert rows[("r2", "gone/c.mp4")]["source"] == "gone/c.mp4", "what cannot be found keeps its spelling"
    assert rows[("r3", "clips/a.mp4")]["source"] == str(data / "clips" / "a.mp4"), "as in the run it came from"
    assert str(data / "mixed" / "b.mp4") in attempts and "mixed/b.mp4" not in attempts
    assert all(r["segment"] == "" for r in rows.values())
    by_source = {r["source"]: r for r in status}
    assert by_source[str(data / "clips" / "a.mp4")]["run_id"] == "r3"
    assert (by_source[str(data / "clips" / "a.mp4")]["start_sec"],
            by_source[str(data / "clips" / "a.mp4")]["duration_sec"]) == (0.5, 1.0)

    monkeypatch.chdir(tmp_path)
    with Lineage.open(path, read_only=True) as lin:
        history = lin.item_history("data/mixed/../mixed/b.mp4")
    assert {e["event"] for e in history} >= {"source", "state", "attempt"}


def test_a_migration_shipped_after_a_later_one_is_still_applied(tmp_path):
    """A file made by code that had migration 5 but not 3 and 4 gets them when next opened."""
    path = tmp_path / "lineage.duckdb"
    _old_database(path, runs={"r1": "/nowhere/in"}, sources={"r1": ["/nowhere/in/a.mp4"]}, versions=(1, 2, 5))
    with Lineage.open(path) as lin:
        applied = [r["version"] for r in lin.execute("SELECT version FROM schema_migrations ORDER BY version")]
        rows = lin.item_status()
    assert applied == [m.version for m in available_migrations()]
    assert [(r["source"], r["segment"], r["start_sec"]) for r in rows] == [("/nowhere/in/a.mp4", "", 0.5)]
