"""The driver's lineage handle: the flow, in the driver process, is the only lineage writer.

DuckDB allows one writing process per file, so the driver keeps one handle per database and passes
it explicitly to what records a run; stages never see it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from storage import Lineage
from tasks.config import PipelineSettings

_lock = threading.Lock()
_open: dict[Path, Lineage] = {}


def open_lineage(settings: PipelineSettings) -> Lineage:
    """This process's handle on the settings' lineage database (opened on first use)."""
    path = settings.lineage_path
    with _lock:
        if path not in _open:
            path.parent.mkdir(parents=True, exist_ok=True)
            _open[path] = Lineage.open(path)
        return _open[path]


def close_lineage(settings: PipelineSettings) -> None:
    """Release the database, so that `thinksound status` or the next run can open it."""
    with _lock:
        handle = _open.pop(settings.lineage_path, None)
    if handle is not None:
        handle.close()
