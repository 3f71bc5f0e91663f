"""Run leases on a shared lineage: a live run renews its lease; one whose lease lapsed is abandoned.

A run on a lineage file holds the file's lock, so the next writer knows it is gone. A run on a shared
(DuckLake) lineage has no such lock: a process killed with SIGKILL, or cut off from the catalog,
would stay 'running' for ever. So while a run is running a thread appends a lease row every
`lease_s / 4` seconds (through a connection of its own), saying until when the run vouches for itself. Appends never conflict with other
writers. The `run_effective` view (and `item_status`, `run_summary` on top of it) reports a 'running'
run whose lease ended as 'abandoned', with the time of its last renewal; a writer opening the lineage
records that status in `runs` too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from storage.lineage_records import to_utc

if TYPE_CHECKING:
    from storage.lineage import Lineage
    from storage.lineage_backend import LineageBackend

log = logging.getLogger(__name__)

ABANDONED_REASON = (
    "no lease renewal since {renewed} UTC (lease ended {expires}): its process was killed or lost the "
    "lineage catalog"
)


class RunLease:
    """Renews one run's lease from a daemon thread until `stop`.

    The thread renews through a connection of its own (`open_backend`): a renewal must not wait behind
    the run's own writes, which may retry commit conflicts for minutes.
    """

    _COLUMNS = ("run_id", "renewed_at", "expires_at")

    def __init__(self, lineage: Lineage, run_id: str, lease_s: float,
                 open_backend: Callable[[], LineageBackend]) -> None:
        if lease_s <= 0:
            raise ValueError(f"a run lease must be positive, got {lease_s}")
        self.run_id, self.lease_s = run_id, lease_s
        self._stopped = threading.Event()
        # The run holds a lease from its first moment.
        lineage._insert_many("run_leases", self._COLUMNS, [self._row()], "")
        self._thread = threading.Thread(target=self._keep, args=(open_backend,), name=f"lease-{run_id}", daemon=True)
        self._thread.start()

    def _row(self) -> tuple[str, datetime, datetime]:
        now = to_utc(None)
        return self.run_id, now, now + timedelta(seconds=self.lease_s)

    def _keep(self, open_backend: Callable[[], LineageBackend]) -> None:
        backend: LineageBackend | None = None
        try:
            while not self._stopped.wait(self.lease_s / 4):
                try:
                    backend = backend or open_backend()
                    backend.insert_rows("run_leases", self._COLUMNS, [self._row()], "", 1)
                except Exception:  # a catalog away for longer than the backend waits: try again next time
                    log.warning("could not renew the lease of run %s", self.run_id, exc_info=True)
        finally:
            if backend is not None:
                backend.close()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


def mark_abandoned(lineage: Lineage) -> list[str]:
    """Record as 'abandoned' every 'running' run whose lease has ended; returns their ids."""
    now = to_utc(None)
    lapsed = lineage.execute(
        "SELECT r.run_id, max(l.renewed_at) AS renewed, max(l.expires_at) AS expires FROM runs r "
        "JOIN run_leases l USING (run_id) WHERE r.status = 'running' GROUP BY r.run_id HAVING max(l.expires_at) < ?",
        [now],
    )
    for row in lapsed:
        reason = ABANDONED_REASON.format(renewed=f"{row['renewed']:%Y-%m-%d %H:%M:%S}", expires=f"{row['expires']:%H:%M:%S}")
        # The lease is checked again in the update: a run that renewed since (its catalog came back) stays.
        lineage.write_statements([(
            "UPDATE runs SET status = 'abandoned', finished_at = ?, status_reason = ? WHERE run_id = ? "
            "AND status = 'running' AND (SELECT max(expires_at) FROM run_leases WHERE run_id = ?) < ?",
            [row["renewed"], reason, row["run_id"], row["run_id"], now],
        )])
        log.warning("run %s was left 'running' on the shared lineage: %s; marked 'abandoned'", row["run_id"], reason)
    return [row["run_id"] for row in lapsed]
