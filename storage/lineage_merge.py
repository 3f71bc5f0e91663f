"""Merge another lineage database (e.g. a concurrent run's workdir) into this one.

DuckDB allows one writer per file, so concurrent runs each write their own lineage.duckdb; this
folds one of them into a central database once that run has finished, or into a shared DuckLake
lineage (`thinksound lineage-import`). Merging is idempotent, and commits all tables at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from storage.lineage_backend import rollback_quietly
from storage.lineage_connect import connect_with_retry
from storage.schema import current_version

if TYPE_CHECKING:
    from storage.lineage import Lineage

# table -> (primary key, conflict rule). "newer:<column>" keeps the row with the later timestamp.
_TABLES: dict[str, tuple[tuple[str, ...], str]] = {
    "runs": (("run_id",), "replace"),
    "items": (("item_id",), "replace"),
    "run_sources": (("run_id", "source", "segment"), "replace"),
    "stage_attempts": (("attempt_id",), "keep"),
    "item_state": (("run_id", "source", "segment"), "newer:updated_at"),
    "artifacts": (("item_id", "kind"), "newer:created_at"),
    "metrics": (("run_id", "item_id", "name"), "replace"),
    "cot": ((), "append-new"),
    "cache": (("key",), "newer:created_at"),
}
_COT_IDENTITY = ("run_id", "source", "segment", "backend", "created_at", "window_index")


def merge_lineage(lin: Lineage, other: str | Path, *, timeout_s: float = 60.0) -> dict[str, int]:
    """Copy every row of `other` into `lin`; return the number of incoming rows per table."""
    other = Path(other).expanduser().resolve()
    if other == lin.path:
        raise ValueError("cannot merge a lineage database into itself")
    if not other.exists():
        raise FileNotFoundError(f"no lineage database at {other}")
    source = connect_with_retry(other, read_only=True, timeout_s=timeout_s, poll_s=0.2)
    try:
        theirs, ours = current_version(source), current_version(lin._con)
        if theirs != ours:
            raise RuntimeError(
                f"{other} is at schema version {theirs}, this database at {ours}: open it once for writing "
                "with the same code version to migrate it first"
            )
        incoming = {table: source.execute(f"SELECT * FROM {table}").to_arrow_table() for table in _TABLES}
    finally:
        source.close()
    counts = {table: rows.num_rows for table, rows in incoming.items()}
    statement = _merge_sql if not lin.shared_backend else _ducklake_merge_sql

    def apply() -> None:
        con = lin._con
        con.begin()
        try:
            lin._backend.serialize_upserts()
            for table, (key, rule) in _TABLES.items():
                rows = incoming[table]
                if rows.num_rows == 0:
                    continue
                con.register("incoming_rows", rows)
                try:
                    con.execute(statement(table, key, rule, rows.column_names))
                finally:
                    con.unregister("incoming_rows")
            con.commit()
        except BaseException:
            rollback_quietly(con)
            raise

    with lin._lock:
        lin._backend.retrying(apply)
    return counts


def _merge_sql(table: str, key: tuple[str, ...], rule: str, columns: list[str]) -> str:
    # Table and column names come from the fixed table list and the schema, never from user input.
    column_list = ", ".join(columns)
    select = f"INSERT INTO {table} ({column_list}) SELECT {column_list} FROM incoming_rows"
    if rule == "append-new":
        match = " AND ".join(f"t.{c} IS NOT DISTINCT FROM incoming_rows.{c}" for c in _COT_IDENTITY)
        return f"{select} WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {match})"
    conflict = f" ON CONFLICT ({', '.join(key)}) DO "
    if rule == "keep":
        return select + conflict + "NOTHING"
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    sql = select + conflict + f"UPDATE SET {updates}"
    if rule.startswith("newer:"):
        column = rule.split(":", 1)[1]
        sql += f" WHERE excluded.{column} >= {table}.{column}"
    return sql


def _ducklake_merge_sql(table: str, key: tuple[str, ...], rule: str, columns: list[str]) -> str:
    # DuckLake has no keys for ON CONFLICT: the same rules as a MERGE on the key columns.
    if rule == "append-new":
        return _merge_sql(table, key, rule, columns)
    column_list = ", ".join(columns)
    on = " AND ".join(f"{table}.{c} = incoming_rows.{c}" for c in key)
    sql = f"MERGE INTO {table} USING incoming_rows ON {on}"
    if rule != "keep":
        updates = ", ".join(f"{c} = incoming_rows.{c}" for c in columns if c not in key)
        newer = ""
        if rule.startswith("newer:"):
            column = rule.split(":", 1)[1]
            newer = f" AND incoming_rows.{column} >= {table}.{column}"
        sql += f" WHEN MATCHED{newer} THEN UPDATE SET {updates}"
    values = ", ".join(f"incoming_rows.{c}" for c in columns)
    return sql + f" WHEN NOT MATCHED THEN INSERT ({column_list}) VALUES ({values})"
