"""Lineage of every run: runs, items, stage attempts, artifacts, metrics, CoT.

Backends (`storage.lineage_backend`). By default lineage is one DuckDB file, `WORKDIR/lineage.duckdb`.
A shared lineage, `ducklake:postgres:<libpq conninfo>` with a data path (a directory or
s3://bucket/prefix/), is a DuckLake that many runs and workers write at once. Both hold the same
tables and views (`item_status`, `item_cot`, `failures`, `run_summary`, `stage_timing`).

Concurrency. A `Lineage` holds one connection for its whole life and serialises its use from threads
with a lock, so a whole Prefect run (tasks in threads) shares one instance (`Lineage.shared`). DuckDB
lets one process at a time open a database file for writing: a second process that opens the same
file waits up to `timeout_s` for the lock, then raises `LineageLocked`. A DuckLake takes writers from
any number of processes; conflicting commits are retried.

Crashed runs. Because the writer of a file holds its lock for the whole run, a run still marked
'running' when another process opens the file for writing can no longer be alive; `open` marks it
'crashed'. The views then report that run's unfinished sources as failed ("run crashed before
the item finished"), unless the source has an outcome from another run, which wins. A DuckLake has
live writers besides this one: there a running run renews a lease (`storage.run_lease`), and one
whose lease lapsed is 'abandoned' (in the views at once; in `runs` when the next writer opens it).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from storage import lineage_queries as queries
from storage.ducklake import DuckLakeTarget, LineageUnavailable, is_ducklake
from storage.lineage_backend import DuckLakeBackend, FileBackend, LineageBackend
from storage.lineage_connect import LineageLocked
from storage.lineage_merge import merge_lineage
from storage.lineage_records import (
    RUN_STATUSES,
    Attempt,
    CotRecord,
    SourceRow,
    StateUpdate,
    Timestamp,
    check_choice,
    coerce,
    to_json,
    to_utc,
)
from storage.run_lease import RunLease, mark_abandoned
from storage.s3_store import S3Config
from storage.schema import check_current, migrate, needs_migration

__all__ = ["Lineage", "LineageLocked", "LineageUnavailable"]

log = logging.getLogger(__name__)

_CHUNK_ROWS = 256
T = TypeVar("T")
_open_paths: dict[str, int] = {}
_shared: dict[str, Lineage] = {}
_registry_lock = threading.Lock()


def _registry_key(target: str | Path) -> str:
    return str(target) if is_ducklake(target) else str(Path(target).expanduser().resolve())


class Lineage:
    """Read and write lineage. Use `Lineage.open(target)`; all methods are thread-safe."""

    def __init__(self, *, backend: LineageBackend, read_only: bool, lease_s: float = 60.0) -> None:
        self._backend = backend
        self.path: Path | None = getattr(backend, "path", None)
        self.read_only = read_only
        self.lease_s = lease_s
        self._lock = threading.RLock()
        self._closed = False
        self._leases: dict[str, RunLease] = {}

    @property
    def _con(self):
        return self._backend.con

    @property
    def shared_backend(self) -> bool:
        """True for a DuckLake (many concurrent writers), False for a single-writer file."""
        return not self._backend.exclusive_writer

    @classmethod
    def open(
        cls,
        target: str | Path,
        *,
        timeout_s: float = 60.0,
        read_only: bool = False,
        poll_s: float = 0.2,
        data_path: str | None = None,
        s3: S3Config | None = None,
        reconnect_timeout_s: float = 60.0,
        lease_s: float = 60.0,
    ) -> Lineage:
        """Open (creating and migrating as needed) a lineage file or a `ducklake:postgres:...` lineage.

        A file waits up to `timeout_s` for another writer to finish. A DuckLake needs `data_path` (and
        `s3` when that is on S3) and waits up to `reconnect_timeout_s` for an unreachable catalog; the
        runs started through it hold leases of `lease_s` seconds. A read-only open of a file written by
        an earlier version migrates it first.
        """
        if is_ducklake(target):
            lake = DuckLakeTarget(catalog=str(target), data_path=data_path or "", s3=s3)
            backend: LineageBackend = DuckLakeBackend.open(
                lake, read_only=read_only, reconnect_timeout_s=reconnect_timeout_s
            )
        else:
            path = Path(target).expanduser().resolve()
            if read_only and not path.exists():
                raise FileNotFoundError(f"no lineage database at {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = FileBackend.open(path, read_only=read_only, timeout_s=timeout_s, poll_s=poll_s)
            if read_only and needs_migration(backend.con):
                backend.close()
                cls.open(path, timeout_s=timeout_s, poll_s=poll_s).close()
                backend = FileBackend.open(path, read_only=True, timeout_s=timeout_s, poll_s=poll_s)
        try:
            if read_only:
                backend.retrying(lambda: check_current(backend.con))
            else:
                backend.retrying(lambda: migrate(backend.con, ducklake=not backend.exclusive_writer))
                backend.prepare_writer()
        except BaseException:
            backend.close()
            raise
        with _registry_lock:
            first_in_process = _open_paths.get(backend.key, 0) == 0
            _open_paths[backend.key] = _open_paths.get(backend.key, 0) + 1
        lineage = cls(backend=backend, read_only=read_only, lease_s=lease_s)
        if first_in_process and not read_only:
            if backend.exclusive_writer:
                lineage._mark_dead_runs()
            else:
                mark_abandoned(lineage)
        return lineage

    @classmethod
    def shared(cls, target: str | Path, **kwargs: Any) -> Lineage:
        """The process-wide instance for `target`, opened on first use (for tasks running in threads)."""
        key = _registry_key(target)
        with _registry_lock:
            existing = _shared.get(key)
        if existing is not None and not existing._closed:
            return existing
        lineage = cls.open(key, **kwargs)
        with _registry_lock:
            _shared[key] = lineage
        return lineage

    def close(self) -> None:
        # A run left running by a closed handle keeps no lease: readers will see it abandoned.
        for lease in list(self._leases.values()):
            lease.stop()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._backend.close()
        with _registry_lock:
            key = self._backend.key
            _open_paths[key] = max(0, _open_paths.get(key, 1) - 1)
            if _shared.get(key) is self:
                del _shared[key]

    def __enter__(self) -> Lineage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _mark_dead_runs(self) -> None:
        with self._lock:
            dead = self._con.execute(
                "UPDATE runs SET status = 'crashed', finished_at = coalesce(finished_at, ?) "
                "WHERE status = 'running' RETURNING run_id",
                [to_utc(None)],
            ).fetchall()
        for (run_id,) in dead:
            log.warning("run %s was left 'running' by a process that is gone; marked 'crashed'", run_id)

    # Low-level helpers.

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Run one parameterised statement and return its rows as dicts."""
        with self._lock:
            names, rows = self._backend.read(sql, params or [])
        return [queries.decode(dict(zip(names, row, strict=True))) for row in rows]

    def serialized(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run `work(connection)` as one transaction that concurrent writers cannot interleave with
        (see `LineageBackend.serialized`); retried whole on a commit conflict."""
        with self._lock:
            return self._backend.serialized(work)

    def write_statements(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run parameterised statements as one transaction."""
        with self._lock:
            self._backend.write(statements)

    def _insert_many(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], conflict: str) -> None:
        """Rows go to the backend in one transaction (`LineageBackend.insert_rows`)."""
        if not rows:
            return
        with self._lock:
            # One transaction: a batch is recorded entirely or not at all.
            self._backend.insert_rows(table, columns, rows, conflict, _CHUNK_ROWS)

    @staticmethod
    def _last_per_key(rows: Iterable[tuple[Any, ...]], key_len: int) -> list[tuple[Any, ...]]:
        # DuckDB refuses to upsert the same key twice in one statement; the last write wins anyway.
        latest: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for row in rows:
            latest[row[:key_len]] = row
        return list(latest.values())

    # Runs.

    def start_run(
        self,
        run_id: str,
        *,
        input: str,
        params: Mapping[str, Any],
        prefect_flow_run_id: str | None = None,
        code_version: str | None = None,
        started_at: Timestamp | None = None,
    ) -> None:
        """Record a run as running; restarting an existing run id reopens it and keeps its start time."""
        self._insert_many(
            "runs",
            ("run_id", "started_at", "status", "input", "params", "prefect_flow_run_id", "code_version"),
            [(run_id, to_utc(started_at), "running", input, to_json(params), prefect_flow_run_id, code_version)],
            "ON CONFLICT (run_id) DO UPDATE SET status = 'running', finished_at = NULL, input = excluded.input, "
            "params = excluded.params, prefect_flow_run_id = excluded.prefect_flow_run_id, "
            "code_version = excluded.code_version",
        )
        if self.shared_backend:
            self._stop_lease(run_id)
            self._leases[run_id] = RunLease(self, run_id, self.lease_s, self._backend.reopen)

    def _stop_lease(self, run_id: str) -> None:
        lease = self._leases.pop(run_id, None)
        if lease is not None:
            lease.stop()

    def finish_run(self, run_id: str, status: str, *, finished_at: Timestamp | None = None) -> None:
        check_choice("run status", status, RUN_STATUSES)
        if status != "running":
            self._stop_lease(run_id)
        with self._lock:
            if not self.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]):
                raise KeyError(f"no run {run_id!r} in lineage")
            self._backend.write([(
                "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?",
                [status, None if status == "running" else to_utc(finished_at), run_id],
            )])

    # Items and sources.

    def upsert_item(
        self,
        item_id: str,
        *,
        content_hash: str,
        start_sec: float | None,
        duration_sec: float | None,
        probe: Mapping[str, Any] | None,
    ) -> None:
        self.upsert_items(
            [dict(item_id=item_id, content_hash=content_hash, start_sec=start_sec, duration_sec=duration_sec,
                  probe=probe)]
        )

    def upsert_items(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Batched `upsert_item`; each mapping has its keyword fields plus `item_id`."""
        now = to_utc(None)
        values = self._last_per_key(
            ((r["item_id"], r["content_hash"], r.get("start_sec"), r.get("duration_sec"), to_json(r.get("probe")), now)
             for r in rows),
            1,
        )
        self._insert_many(
            "items",
            ("item_id", "content_hash", "start_sec", "duration_sec", "probe", "created_at"),
            values,
            "ON CONFLICT (item_id) DO UPDATE SET content_hash = excluded.content_hash, "
            "start_sec = excluded.start_sec, duration_sec = excluded.duration_sec, probe = excluded.probe",
        )

    def add_source(
        self,
        run_id: str,
        source: str,
        *,
        item_id: str | None,
        position: int,
        segment: str = "",
        manifest_id: str | None = None,
        caption: str | None = None,
        caption_cot: str | None = None,
    ) -> None:
        self.add_sources(
            run_id,
            [SourceRow(source=source, item_id=item_id, position=position, segment=segment,
                       manifest_id=manifest_id, caption=caption, caption_cot=caption_cot)],
        )

    def add_sources(self, run_id: str, rows: Sequence[SourceRow | Mapping[str, Any]]) -> None:
        """Batched `add_source`; a (source, segment) added twice to one run keeps its latest values."""
        values = self._last_per_key(
            (
                (run_id, r.source, r.segment, r.source_display or r.source, r.start_sec, r.requested_duration_sec,
                 r.item_id, r.manifest_id, r.caption, r.caption_cot, r.position)
                for r in (coerce(SourceRow, row) for row in rows)
            ),
            3,
        )
        self._insert_many(
            "run_sources",
            ("run_id", "source", "segment", "source_display", "start_sec", "requested_duration_sec", "item_id",
             "manifest_id", "caption", "caption_cot", "position"),
            values,
            "ON CONFLICT (run_id, source, segment) DO UPDATE SET "
            "item_id = coalesce(excluded.item_id, run_sources.item_id), source_display = excluded.source_display, "
            "start_sec = excluded.start_sec, requested_duration_sec = excluded.requested_duration_sec, "
            "manifest_id = excluded.manifest_id, caption = excluded.caption, "
            "caption_cot = excluded.caption_cot, position = excluded.position",
        )

    def set_item_state(
        self,
        run_id: str,
        source: str,
        *,
        status: str,
        stage: str | None,
        error: str | None = None,
        item_id: str | None = None,
        segment: str = "",
    ) -> None:
        self.set_item_states(
            run_id,
            [StateUpdate(source=source, segment=segment, status=status, stage=stage, error=error, item_id=item_id)],
        )

    def set_item_states(self, run_id: str, rows: Sequence[StateUpdate | Mapping[str, Any]]) -> None:
        """Batched `set_item_state` (one statement per 256 rows)."""
        now = to_utc(None)
        values = self._last_per_key(
            (
                (run_id, u.source, u.segment, u.item_id, u.status, u.stage, u.error, now)
                for u in (coerce(StateUpdate, row) for row in rows)
            ),
            3,
        )
        self._insert_many(
            "item_state",
            ("run_id", "source", "segment", "item_id", "status", "stage", "error", "updated_at"),
            values,
            "ON CONFLICT (run_id, source, segment) DO UPDATE SET "
            "item_id = coalesce(excluded.item_id, item_state.item_id), "
            "status = excluded.status, stage = excluded.stage, error = excluded.error, "
            "updated_at = excluded.updated_at",
        )

    # Attempts, artifacts, metrics, CoT, cache.

    def record_attempt(self, **fields: Any) -> str:
        """Record one stage attempt (fields of `Attempt`); returns its attempt id."""
        return self.record_attempts([Attempt(**fields)])[0]

    def record_attempts(self, attempts: Sequence[Attempt | Mapping[str, Any]]) -> list[str]:
        rows = []
        ids = []
        for attempt in (coerce(Attempt, a) for a in attempts):
            started, finished = to_utc(attempt.started_at), to_utc(attempt.finished_at)
            attempt_id = uuid.uuid4().hex
            ids.append(attempt_id)
            rows.append((
                attempt_id, attempt.run_id, attempt.item_id, attempt.source, attempt.segment, attempt.stage,
                attempt.status,
                attempt.input_hash, to_json(attempt.params), attempt.model_version, attempt.prompt_version,
                started, finished, max(0.0, (finished - started).total_seconds()), attempt.error,
                to_json(attempt.details), attempt.worker,
            ))
        self._insert_many(
            "stage_attempts",
            ("attempt_id", "run_id", "item_id", "source", "segment", "stage", "status", "input_hash", "params",
             "model_version", "prompt_version", "started_at", "finished_at", "duration_s", "error", "details",
             "worker"),
            rows,
            "",
        )
        return ids

    def record_artifact(
        self,
        item_id: str,
        kind: str,
        *,
        uri: str,
        key: str,
        run_id: str,
        sha256: str | None = None,
        bytes: int | None = None,
    ) -> None:
        self.record_artifacts(
            [dict(item_id=item_id, kind=kind, uri=uri, key=key, sha256=sha256, bytes=bytes, run_id=run_id)]
        )

    def record_artifacts(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Batched `record_artifact`; each mapping has the same fields."""
        now = to_utc(None)
        values = self._last_per_key(
            ((r["item_id"], r["kind"], r["uri"], r["key"], r.get("sha256"), r.get("bytes"), r.get("run_id"), now)
             for r in rows),
            2,
        )
        self._insert_many(
            "artifacts",
            ("item_id", "kind", "uri", "key", "sha256", "bytes", "run_id", "created_at"),
            values,
            "ON CONFLICT (item_id, kind) DO UPDATE SET uri = excluded.uri, key = excluded.key, "
            "sha256 = excluded.sha256, bytes = excluded.bytes, run_id = excluded.run_id, "
            "created_at = excluded.created_at",
        )

    def artifact(self, item_id: str, kind: str) -> dict[str, Any] | None:
        rows = self.execute("SELECT * FROM artifacts WHERE item_id = ? AND kind = ?", [item_id, kind])
        return rows[0] if rows else None

    def artifacts(self, item_id: str) -> dict[str, dict[str, Any]]:
        """All artifacts of an item, by kind."""
        return {r["kind"]: r for r in self.execute("SELECT * FROM artifacts WHERE item_id = ?", [item_id])}

    def record_metrics(self, run_id: str, item_id: str, metrics: Mapping[str, float]) -> None:
        self.record_metrics_many(run_id, {item_id: metrics})

    def record_metrics_many(self, run_id: str, metrics_by_item: Mapping[str, Mapping[str, float]]) -> None:
        """Batched `record_metrics`: {item_id: {name: value}} for one run."""
        values = [
            (run_id, item_id, name, None if value is None else float(value))
            for item_id, metrics in metrics_by_item.items()
            for name, value in metrics.items()
        ]
        self._insert_many(
            "metrics", ("run_id", "item_id", "name", "value"), values,
            "ON CONFLICT (run_id, item_id, name) DO UPDATE SET value = excluded.value",
        )

    def record_cot(self, **fields: Any) -> None:
        """Record the CoT used for one source (fields of `CotRecord`)."""
        self.record_cots([CotRecord(**fields)])

    def record_cots(self, records: Sequence[CotRecord | Mapping[str, Any]]) -> None:
        now = to_utc(None)
        columns = ("run_id", "item_id", "source", "segment", "backend", "model", "prompt_version", "prompt_hash",
                   "caption", "caption_cot", "raw_answer", "parsed", "t5_tokens", "t5_truncated_tokens", "latency_s",
                   "retries", "error", "window_index", "window_start_sec", "window_end_sec", "created_at")
        rows = []
        for rec in (coerce(CotRecord, r) for r in records):
            rows.append(tuple(
                to_json(rec.parsed) if c == "parsed" else now if c == "created_at" else getattr(rec, c)
                for c in columns
            ))
        self._insert_many("cot", columns, rows, "")

    def cache_get(self, key: str) -> str | None:
        rows = self.execute("SELECT uri FROM cache WHERE key = ?", [key])
        return rows[0]["uri"] if rows else None

    def cache_get_many(self, keys: Sequence[str]) -> dict[str, str]:
        """URIs of the keys that are cached (missing keys are absent from the result)."""
        if not keys:
            return {}
        rows = self.execute("SELECT key, uri FROM cache WHERE list_contains(?::VARCHAR[], key)", [list(keys)])
        return {r["key"]: r["uri"] for r in rows}

    def cache_put(self, key: str, kind: str, uri: str) -> None:
        self.cache_put_many([(key, kind, uri)])

    def cache_put_many(self, entries: Sequence[tuple[str, str, str]]) -> None:
        now = to_utc(None)
        values = self._last_per_key(((k, kind, uri, now) for k, kind, uri in entries), 1)
        self._insert_many(
            "cache", ("key", "kind", "uri", "created_at"), values,
            "ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, uri = excluded.uri, created_at = excluded.created_at",
        )

    # Reads.

    def item_status(self, source: str | None = None) -> list[dict[str, Any]]:
        return queries.item_status(self, source)

    def item_cot(self, source: str | None = None) -> list[dict[str, Any]]:
        return queries.item_cot(self, source)

    def failures(self, run_id: str | None = None) -> list[dict[str, Any]]:
        return queries.failures(self, run_id)

    def run_summary(self, run_id: str | None = None) -> list[dict[str, Any]]:
        return queries.run_summary(self, run_id)

    def stage_timing(self, run_id: str | None = None) -> list[dict[str, Any]]:
        return queries.stage_timing(self, run_id)

    def run_states(self, run_id: str) -> list[dict[str, Any]]:
        return queries.run_states(self, run_id)

    def item_history(self, item_id_or_source: str) -> list[dict[str, Any]]:
        return queries.item_history(self, item_id_or_source)

    def select_for_reprocess(
        self,
        *,
        run_id: str | None = None,
        stage: str | None = None,
        error_contains: str | None = None,
        statuses: Sequence[str] = ("failed", "rejected"),
    ) -> list[dict[str, Any]]:
        return queries.select_for_reprocess(
            self, run_id=run_id, stage=stage, error_contains=error_contains, statuses=tuple(statuses)
        )

    def merge_from(self, other: str | Path, *, timeout_s: float = 60.0) -> dict[str, int]:
        """Fold another (finished) lineage database into this one; returns incoming rows per table."""
        return merge_lineage(self, other, timeout_s=timeout_s)
