"""Versioned schema migrations for the lineage database.

Migrations are the files `storage/migrations/NNN_name.sql`, applied in order, each in its own
transaction, and recorded in `schema_migrations`. A file is never edited once released: schema
changes go into a new, higher-numbered file.

The same files migrate a DuckLake lineage. DuckLake has no primary, unique or check constraints, so
they are dropped from the statements there (`for_ducklake`); the writes keep rows unique instead.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import duckdb

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, kw_only=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """All migrations shipped with the package, sorted by version."""
    found: list[Migration] = []
    for entry in resources.files("storage").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(version=int(match[1]), name=match[2], sql=entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


def for_ducklake(sql: str) -> str:
    """The statements without PRIMARY KEY and CHECK constraints, which DuckLake does not support."""
    sql = re.sub(r",\s*PRIMARY KEY\s*\([^)]*\)", "", sql)
    sql = re.sub(r"\s+PRIMARY KEY\b", "", sql)
    out: list[str] = []
    position = 0
    for match in re.finditer(r"\s+CHECK\s*\(", sql):
        if match.start() < position:
            continue
        out.append(sql[position : match.start()])
        depth, index = 1, match.end()
        while depth:
            if index >= len(sql):
                raise ValueError("unbalanced parentheses in a CHECK constraint")
            depth += {"(": 1, ")": -1}.get(sql[index], 0)
            index += 1
        position = index
    out.append(sql[position:])
    return "".join(out)


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """Highest applied migration, 0 for an empty database."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations' "
        "AND table_catalog = current_database()"
    ).fetchone()
    if not exists or not exists[0]:
        return 0
    row = con.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(con: duckdb.DuckDBPyConnection, *, ducklake: bool = False) -> list[int]:
    """Apply every pending migration; return the versions applied (empty when up to date)."""
    dialect = for_ducklake if ducklake else str
    con.execute(dialect(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
        " applied_at TIMESTAMP NOT NULL DEFAULT (now()::TIMESTAMP))"
    ))
    have = current_version(con)
    migrations = available_migrations()
    latest = migrations[-1].version if migrations else 0
    if have > latest:
        raise RuntimeError(
            f"lineage database is at schema version {have}, newer than this code's {latest}; upgrade the code"
        )
    applied: list[int] = []
    for migration in migrations:
        if migration.version <= have:
            continue
        con.begin()
        try:
            con.execute(dialect(migration.sql))
            con.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, now()::TIMESTAMP)",
                [migration.version, migration.name],
            )
            con.commit()
        except BaseException:
            con.rollback()
            raise
        log.info("applied lineage migration %03d_%s", migration.version, migration.name)
        applied.append(migration.version)
    return applied


def check_current(con: duckdb.DuckDBPyConnection) -> None:
    """For read-only connections, which cannot migrate: fail clearly when the schema is behind."""
    migrations = available_migrations()
    latest = migrations[-1].version if migrations else 0
    have = current_version(con)
    if have != latest:
        raise RuntimeError(
            f"lineage database is at schema version {have}, this code expects {latest}; "
            "open it once for writing to migrate"
        )
