"""Sources recorded before this version are spelled as the user typed them, relative to the folder the
run was started from. Record each as its absolute, canonical path (see `storage.sources`) where it can
be found again: against the run's input (a manifest's folder, or the input path the source was listed
under), then against the folder this migration runs in if the file exists there. The rest keep their
spelling, which `source_display` keeps for every row.
"""

from __future__ import annotations

import os

import duckdb

from storage.s3_store import is_s3_uri
from storage.sources import canonical_source

# The manifest suffixes of the versions that wrote relative sources (frozen with this migration).
_MANIFEST_SUFFIXES = (".csv", ".parquet")
_TABLES = ("run_sources", "item_state", "stage_attempts", "cot")


def _resolve(source: str, run_input: str | None) -> str | None:
    """The canonical spelling of an old source, or None when it cannot be found."""
    if is_s3_uri(source) or "://" in source:
        return source
    if os.path.isabs(source):
        return canonical_source(source)
    candidate = source
    if run_input and run_input.lower().endswith(_MANIFEST_SUFFIXES):
        candidate = os.path.join(os.path.dirname(run_input), source)
    if os.path.isabs(candidate):
        return canonical_source(candidate)
    return canonical_source(candidate) if os.path.lexists(candidate) else None


def upgrade(con: duckdb.DuckDBPyConnection) -> None:
    inputs = dict(con.execute("SELECT run_id, input FROM runs").fetchall())
    union = " UNION ".join(f"SELECT run_id, source FROM {t} WHERE source IS NOT NULL" for t in _TABLES)
    pairs = con.execute(f"SELECT DISTINCT run_id, source FROM ({union}) ORDER BY run_id, source").fetchall()
    resolved = {(run_id, source): _resolve(source, inputs.get(run_id)) for run_id, source in pairs}
    # A reprocessing run copied its sources from earlier runs: a spelling resolved there, one way only,
    # is resolved the same way here.
    elsewhere: dict[str, set[str]] = {}
    for (_, source), new in resolved.items():
        if new is not None:
            elsewhere.setdefault(source, set()).add(new)
    used: dict[str, set[str]] = {}
    for run_id, source in pairs:
        used.setdefault(run_id, set()).add(source)
    mapping = []
    for (run_id, source), new in resolved.items():
        if new is None and len(elsewhere.get(source, ())) == 1:
            new = next(iter(elsewhere[source]))
        # Two old spellings of one file in one run keep the second as it was: a key must stay unique.
        if new is None or new == source or new in used[run_id]:
            continue
        used[run_id].add(new)
        mapping.append((run_id, source, new))
    if not mapping:
        return
    con.execute("CREATE TEMP TABLE source_map (run_id VARCHAR, old VARCHAR, new VARCHAR)")
    con.executemany("INSERT INTO source_map VALUES (?, ?, ?)", mapping)
    for table in _TABLES:
        con.execute(
            f"UPDATE {table} SET source = m.new FROM source_map m WHERE {table}.run_id = m.run_id "
            f"AND {table}.source = m.old"
        )
    con.execute("DROP TABLE source_map")
