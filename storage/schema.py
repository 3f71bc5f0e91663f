"""Versioned schema migrations for the lineage database.

Migrations are the files `storage/migrations/NNN_name.sql`, applied in order, each in its own
transaction, and recorded in `schema_migrations`. A file is never edited once released: schema
changes go into a new, higher-numbered file. A data change that SQL cannot express (one that looks
at the file system) is a module `NNN_name.py` with `upgrade(con)`, run in the same way.

The same files migrate a DuckLake lineage. DuckLake has no primary, unique or check constraints, so
they are dropped from the statements there (`for_ducklake`); the writes keep rows unique instead.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import duckdb

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.(sql|py)$")


@dataclass(frozen=True, kw_only=True)
class Migration:
    version: int
    name: str
    sql: str | None = None
    upgrade: Callable[[duckdb.DuckDBPyConnection], None] | None = None

    def apply(self, con: duckdb.DuckDBPyConnection, dialect: Callable[[str], str] = str) -> None:
        if self.sql is not None:
            con.execute(dialect(self.sql))
        if self.upgrade is not None:
            self.upgrade(con)


def available_migrations() -> list[Migration]:
    """All migrations shipped with the package, sorted by version."""
    found: list[Migration] = []
    for entry in resources.files("storage").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        version, name, kind = int(match[1]), match[2], match[3]
        if kind == "sql":
            found.append(Migration(version=version, name=name, sql=entry.read_text(encoding="utf-8")))
        else:
            module = importlib.import_module(f"storage.migrations.{entry.name.removesuffix('.py')}")
            found.append(Migration(version=version, name=name, upgrade=module.upgrade))
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


def applied_versions(con: duckdb.DuckDBPyConnection) -> set[int]:
    """The migrations applied to this database (none for an empty one)."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations' "
        "AND table_catalog = current_database()"
    ).fetchone()
    if not exists or not exists[0]:
        return set()
    return {int(row[0]) for row in con.execute("SELECT version FROM schema_migrations").fetchall()}


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """Highest applied migration, 0 for an empty database."""
    return max(applied_versions(con), default=0)


def pending_migrations(con: duckdb.DuckDBPyConnection) -> list[Migration]:
    """The shipped migrations not yet applied, in order. Set-based, not "above the highest": a database
    written by a version that shipped migration N+2 before N+1 still gets N+1."""
    have = applied_versions(con)
    migrations = available_migrations()
    latest = migrations[-1].version if migrations else 0
    if max(have, default=0) > latest:
        raise RuntimeError(
            f"lineage database is at schema version {max(have)}, newer than this code's {latest}; "
            "upgrade the code"
        )
    return [m for m in migrations if m.version not in have]


def migrate(con: duckdb.DuckDBPyConnection, *, ducklake: bool = False) -> list[int]:
    """Apply every pending migration; return the versions applied (empty when up to date)."""
    dialect = for_ducklake if ducklake else str
    con.execute(dialect(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
        " applied_at TIMESTAMP NOT NULL DEFAULT (now()::TIMESTAMP))"
    ))
    applied: list[int] = []
    for migration in pending_migrations(con):
        con.begin()
        try:
            if migration.version in applied_versions(con):
                # A shared (DuckLake) lineage: another process applied it since the list was read.
                con.rollback()
                continue
            migration.apply(con, dialect)
            con.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, now()::TIMESTAMP)",
                [migration.version, migration.name],
            )
            con.commit()
        except BaseException:
            # A DuckLake commit that conflicted has already ended its transaction.
            with contextlib.suppress(duckdb.Error):
                con.rollback()
            raise
        log.info("applied lineage migration %03d_%s", migration.version, migration.name)
        applied.append(migration.version)
    return applied


def needs_migration(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(pending_migrations(con))


def check_current(con: duckdb.DuckDBPyConnection) -> None:
    """For read-only connections, which cannot migrate: fail clearly when the schema is behind."""
    missing = [m.version for m in pending_migrations(con)]
    if missing:
        raise RuntimeError(
            f"lineage database lacks schema migrations {missing}; open it once for writing to migrate"
        )
