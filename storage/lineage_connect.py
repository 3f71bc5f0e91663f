"""Opening the lineage database while another process may hold DuckDB's single-writer lock."""

from __future__ import annotations

import re
import time
from pathlib import Path

import duckdb


class LineageLocked(RuntimeError):
    """Another process holds the lineage database open for writing."""


def _is_lock_error(exc: Exception) -> bool:
    return "lock" in str(exc).lower()


def connect_with_retry(path: Path, *, read_only: bool, timeout_s: float, poll_s: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + timeout_s
    # Default configuration on purpose: DuckDB refuses a second in-process connection to the same
    # file with a different one, and tests or notebooks may call duckdb.connect(path) directly.
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if not _is_lock_error(exc):
                raise
            if time.monotonic() >= deadline:
                holder = re.search(r"PID \d+", str(exc))
                raise LineageLocked(
                    f"lineage database {path} is held open by another process"
                    f"{' (' + holder.group(0) + ')' if holder else ''} and stayed locked for {timeout_s:.0f}s. "
                    "DuckDB allows one writer per file: wait for that run to finish, or give this run its "
                    "own workdir (its own lineage.duckdb)."
                ) from exc
            time.sleep(poll_s)
