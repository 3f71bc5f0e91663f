"""The driver's lineage handle: the flow, in the driver process, is the only lineage writer.

DuckDB allows one writing process per file, so the driver keeps one handle per lineage and passes it
explicitly to what records a run; stages never see it. A shared (DuckLake) lineage is opened once per
process too. S3 credentials for a DuckLake data path on S3 are resolved here, in the process that uses
them (as for the artifact store). Front-ends that read or import a lineage file open it here too, and
report the errors of opening one (busy, unreachable) that this module names.
"""

from __future__ import annotations

import threading
from pathlib import Path

from storage import Lineage, LineageLocked, LineageUnavailable
from tasks.config import PipelineSettings
from tasks.s3_access import is_s3_uri, s3_config

__all__ = [
    "Lineage",
    "LineageLocked",
    "LineageUnavailable",
    "close_lineage",
    "migrate_lineage_file",
    "new_lineage",
    "open_lineage",
    "read_lineage_file",
]

_lock = threading.Lock()
_open: dict[str, Lineage] = {}


def new_lineage(settings: PipelineSettings, *, read_only: bool = False) -> Lineage:
    """A new handle on the settings' lineage: the workdir's file (read-only: it must exist) or a DuckLake."""
    if settings.lineage is None:
        if not read_only:
            settings.lineage_path.parent.mkdir(parents=True, exist_ok=True)
        return Lineage.open(settings.lineage_path, read_only=read_only)
    data = settings.lineage_data
    s3 = s3_config(settings.s3) if data and is_s3_uri(data) else None
    return Lineage.open(
        settings.lineage, data_path=data, s3=s3, read_only=read_only, lease_s=settings.lineage_lease_s
    )


def read_lineage_file(path: Path) -> Lineage:
    """A read-only handle on a lineage file, or LineageLocked at once: a run holds DuckDB's lock for its
    whole duration, so waiting for it would hang."""
    return Lineage.open(path, read_only=True, timeout_s=0)


def migrate_lineage_file(path: Path) -> None:
    """Bring a lineage file of an older version up to this one, as any writer does on opening it."""
    Lineage.open(path).close()


def open_lineage(settings: PipelineSettings) -> Lineage:
    """This process's handle on the settings' lineage (opened on first use)."""
    target = settings.lineage_target
    with _lock:
        if target not in _open:
            lin = new_lineage(settings)
            # The driver's writes are many small inserts: DuckDB's worker threads cost more CPU
            # coordinating them than they save (~0.1 ms of the driver's ~1 ms per item).
            lin.execute("SET threads TO 1")
            _open[target] = lin
        return _open[target]


def close_lineage(settings: PipelineSettings) -> None:
    """Release the lineage, so that `thinksound status` or the next run can open a file lineage."""
    with _lock:
        handle = _open.pop(settings.lineage_target, None)
    if handle is not None:
        handle.close()
