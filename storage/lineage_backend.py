"""Where lineage lives: one DuckDB file (the default), or a DuckLake that many processes share.

`Lineage` speaks DuckDB SQL to either backend; a backend owns what differs between them:
- how it is opened (a file lock to wait for, or a PostgreSQL catalog to reach);
- upserts: the file has primary keys (`INSERT ... ON CONFLICT`); DuckLake has no primary or unique
  keys, so the same upsert becomes a `MERGE` on the key, which keeps writes idempotent;
- concurrency: DuckLake detects conflicting commits of concurrent writers (for example two that
  update one table) and this backend retries them, and waits a bounded time for a catalog that went
  away (PostgreSQL restarted) before failing clearly;
- whether a run left 'running' can be declared dead at open (only a single-writer file knows that).
"""

from __future__ import annotations

import logging
import random
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from storage import ducklake
from storage.ducklake import DuckLakeTarget, LineageUnavailable, is_connection_error
from storage.lineage_connect import connect_with_retry

log = logging.getLogger(__name__)

Statement = tuple[str, Sequence[Any]]
T = TypeVar("T")

_WRITE_LOCK = "lineage_write_lock"
_CONFLICT = re.compile(r"^ON CONFLICT \(([^)]*)\) DO (NOTHING|UPDATE SET (.+))$", re.DOTALL)


class LineageBackend(ABC):
    """One open connection to a lineage store."""

    #: True when holding the store open for writing excludes every other writer (a DuckDB file).
    exclusive_writer: bool
    #: Identity of the store within a process (one shared `Lineage` per store).
    key: str

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    @abstractmethod
    def insert_sql(self, table: str, columns: Sequence[str], n_rows: int, conflict: str) -> str:
        """A statement that writes `n_rows` rows of `columns`, resolving key conflicts as `conflict` says."""

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], conflict: str,
                    chunk_rows: int) -> None:
        """Write the rows in one transaction: multi-row INSERT statements of `chunk_rows` rows each."""
        statements = []
        for start in range(0, len(rows), chunk_rows):
            chunk = rows[start : start + chunk_rows]
            sql = self.insert_sql(table, columns, len(chunk), conflict)
            statements.append((sql, [value for row in chunk for value in row]))
        self.write(statements)

    def write(self, statements: Sequence[Statement]) -> None:
        """Run the statements; several commit together, so a batch is recorded entirely or not at all."""
        if len(statements) == 1:
            self.con.execute(*statements[0])
            return
        self.con.begin()
        try:
            for sql, params in statements:
                self.con.execute(sql, params)
            self.con.commit()
        except BaseException:
            self.con.rollback()
            raise

    def serialized(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run `work` in a transaction that no concurrent upserting transaction interleaves with: a
        read-then-write (a claim) sees every write committed before it, or conflicts and is retried."""
        self.con.begin()
        try:
            result = work(self.con)
            self.con.commit()
        except BaseException:
            rollback_quietly(self.con)
            raise
        return result

    def read(self, sql: str, params: Sequence[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        cursor = self.con.execute(sql, params)
        if cursor.description is None:
            return [], []
        return [d[0] for d in cursor.description], cursor.fetchall()

    def retrying(self, work: Callable[[], T]) -> T:
        """Run `work` (which may span transactions) with this backend's retries."""
        return work()

    def prepare_writer(self) -> None:
        """Anything a writer needs besides the schema (after migrating); a file needs nothing."""
        return None

    def serialize_upserts(self) -> None:
        """Call inside a transaction that upserts: see `DuckLakeBackend`; a file's keys do it already."""
        return None

    def close(self) -> None:
        self.con.close()


class FileBackend(LineageBackend):
    """`WORKDIR/lineage.duckdb`: DuckDB allows one writing process, so a run holds the file."""

    exclusive_writer = True

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path) -> None:
        super().__init__(con)
        self.path = path
        self.key = str(path)

    @classmethod
    def open(cls, path: Path, *, read_only: bool, timeout_s: float, poll_s: float) -> FileBackend:
        return cls(connect_with_retry(path, read_only=read_only, timeout_s=timeout_s, poll_s=poll_s), path)

    def insert_sql(self, table: str, columns: Sequence[str], n_rows: int, conflict: str) -> str:
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {_values(len(columns), n_rows)} {conflict}"

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], conflict: str,
                    chunk_rows: int) -> None:
        """One INSERT ... SELECT from the rows as an Arrow table: binding thousands of statement parameters
        costs DuckDB ~10x more CPU per row, which was most of the driver's cost per item."""
        incoming = pa.table({name: [row[i] for row in rows] for i, name in enumerate(columns)})
        column_list = ", ".join(columns)
        # The view name is private to this connection; table and columns come from the fixed schema.
        self.con.register("incoming_lineage_rows", incoming)
        try:
            self.con.execute(
                f"INSERT INTO {table} ({column_list}) SELECT {column_list} FROM incoming_lineage_rows {conflict}"
            )
        finally:
            self.con.unregister("incoming_lineage_rows")


class DuckLakeBackend(LineageBackend):
    """A DuckLake on a PostgreSQL catalog: concurrent writers, snapshot readers that block nobody."""

    exclusive_writer = False

    def __init__(
        self, con: duckdb.DuckDBPyConnection, alias: str, target: DuckLakeTarget, *, conflict_timeout_s: float,
        reconnect_timeout_s: float,
    ) -> None:
        super().__init__(con)
        self.alias = alias
        self.target = target
        self.key = target.catalog
        self.path = None
        self.conflict_timeout_s = conflict_timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s

    @classmethod
    def open(
        cls, target: DuckLakeTarget, *, read_only: bool, conflict_timeout_s: float = 300.0,
        reconnect_timeout_s: float = 60.0,
    ) -> DuckLakeBackend:
        con, alias = ducklake.connect(target, read_only=read_only, reconnect_timeout_s=reconnect_timeout_s)
        return cls(
            con, alias, target, conflict_timeout_s=conflict_timeout_s, reconnect_timeout_s=reconnect_timeout_s
        )

    def close(self) -> None:
        ducklake.disconnect(self.con, self.alias)

    def reopen(self) -> DuckLakeBackend:
        """Another writing connection to the same lake (already migrated)."""
        return DuckLakeBackend.open(
            self.target, read_only=False, conflict_timeout_s=self.conflict_timeout_s,
            reconnect_timeout_s=self.reconnect_timeout_s,
        )

    def insert_sql(self, table: str, columns: Sequence[str], n_rows: int, conflict: str) -> str:
        column_list = ", ".join(columns)
        if not conflict.strip():
            return f"INSERT INTO {table} ({column_list}) VALUES {_values(len(columns), n_rows)}"
        match = _CONFLICT.match(" ".join(conflict.split()))
        if match is None:
            raise ValueError(f"cannot express this conflict rule as a DuckLake MERGE: {conflict!r}")
        keys = [k.strip() for k in match[1].split(",")]
        on = " AND ".join(f"{table}.{k} = excluded.{k}" for k in keys)
        sql = f"MERGE INTO {table} USING (VALUES {_values(len(columns), n_rows)}) AS excluded ({column_list}) ON {on}"
        if match[3]:
            sql += f" WHEN MATCHED THEN UPDATE SET {match[3]}"
        inserted = ", ".join(f"excluded.{c}" for c in columns)
        return sql + f" WHEN NOT MATCHED THEN INSERT ({column_list}) VALUES ({inserted})"

    def prepare_writer(self) -> None:
        def create() -> None:
            self.con.execute(f"CREATE TABLE IF NOT EXISTS {_WRITE_LOCK} (n BIGINT NOT NULL)")
            if not self.con.execute(f"SELECT count(*) FROM {_WRITE_LOCK}").fetchone()[0]:
                self.con.execute(f"INSERT INTO {_WRITE_LOCK} VALUES (0)")

        self.retrying(create)

    def serialize_upserts(self) -> None:
        """Make concurrent upserting transactions conflict, so that one of them retries.

        DuckLake lets two transactions that insert into one table both commit: two writers whose MERGE
        found no row for a new key (an item two runs met at once) would both insert it. Every upserting
        transaction also updates the one row of `lineage_write_lock`, and two transactions that update
        one table conflict: the later one retries, and its MERGE then finds the row.
        """
        self.con.execute(f"UPDATE {_WRITE_LOCK} SET n = n + 1")

    def write(self, statements: Sequence[Statement]) -> None:
        upserts = any(sql.startswith("MERGE") for sql, _ in statements)

        def run(con: duckdb.DuckDBPyConnection) -> None:
            for sql, params in statements:
                con.execute(sql, params)

        self.retrying(lambda: self._transaction(run, serialize=upserts))

    def serialized(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        return self.retrying(lambda: self._transaction(work, serialize=True))

    def _transaction(self, work: Callable[[duckdb.DuckDBPyConnection], T], *, serialize: bool) -> T:
        self.con.begin()
        try:
            if serialize:
                self.serialize_upserts()
            result = work(self.con)
            self.con.commit()
        except BaseException:
            rollback_quietly(self.con)
            raise
        return result

    def read(self, sql: str, params: Sequence[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        return self.retrying(lambda: LineageBackend.read(self, sql, params))

    def retrying(self, work: Callable[[], T]) -> T:
        """Retry commit conflicts with jittered backoff, and wait out an unreachable catalog, both bounded."""
        started = time.monotonic()
        unreachable_since: float | None = None
        conflicts = 0
        while True:
            try:
                return work()
            except duckdb.Error as exc:
                now = time.monotonic()
                if is_connection_error(exc):
                    unreachable_since = unreachable_since or now
                    if now - unreachable_since >= self.reconnect_timeout_s:
                        raise LineageUnavailable(
                            f"shared lineage catalog ({self.target.conninfo}) unreachable for "
                            f"{self.reconnect_timeout_s:.0f}s; nothing of the interrupted write was kept: "
                            f"{str(exc).strip().splitlines()[0][:300]}"
                        ) from None
                    time.sleep(0.5)
                    continue
                if not _is_conflict(exc):
                    raise
                unreachable_since = None
                conflicts += 1
                if now - started >= self.conflict_timeout_s:
                    raise
                # Conflicting writers are few (one per run): a short, growing, jittered pause separates them.
                time.sleep(random.uniform(0.5, 1.0) * min(2.0, 0.02 * 2 ** min(conflicts, 7)))
                if conflicts in (10, 50):
                    log.info("lineage commit conflicted %d times with other writers; still retrying", conflicts)


def _values(n_columns: int, n_rows: int) -> str:
    row = "(" + ", ".join("?" for _ in range(n_columns)) + ")"
    return ", ".join(row for _ in range(n_rows))


def _is_conflict(exc: BaseException) -> bool:
    # Processes that open a new lake together migrate it together: the later ones' DDL then finds the
    # object made (a catalog error, not a commit conflict); a retry reads the new schema version.
    return "Transaction conflict" in str(exc) or (
        isinstance(exc, duckdb.CatalogException) and "already exists" in str(exc)
    )


def rollback_quietly(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.rollback()
    except duckdb.Error:
        pass  # the transaction is already gone (failed commit or lost connection)
