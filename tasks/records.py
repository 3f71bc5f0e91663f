"""Stage results: the items a stage worked on plus the lineage rows it produced, written by the driver.

Stages run anywhere (this process, or a Ray worker on another machine) and never open lineage: they
return a `StageResult`, and the flow in the driver, the only lineage writer, hands its `records` to
`write_records`. Attempt rows are made here, in the process that ran the compute, which they name.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from storage import CotRecord, Lineage, SourceRow, Stage
from tasks.items import WorkItem, attempt

_PARTIAL = "stage_partial_result"


@dataclass
class LineageRecords:
    """One run's rows for the lineage tables, in the order `write_records` commits them."""

    run_id: str
    items: list[dict[str, object]] = field(default_factory=list)
    sources: list[SourceRow] = field(default_factory=list)
    artifacts: list[dict[str, object]] = field(default_factory=list)
    metrics: dict[str, dict[str, object]] = field(default_factory=dict)
    cache: list[tuple[str, str, str]] = field(default_factory=list)
    attempts: list[dict[str, object]] = field(default_factory=list)
    # Written by the driver as items settle: each source's state and the CoT it was dubbed with.
    cots: list[CotRecord] = field(default_factory=list)
    states: list[dict[str, object]] = field(default_factory=list)

    def attempt(self, stage: Stage, item: WorkItem, *, status: str, **fields: object) -> None:
        """Book one stage attempt of one item (see `tasks.items.attempt`)."""
        self.attempts.append(attempt(self.run_id, stage, item, status=status, **fields))

    def extend(self, other: LineageRecords) -> None:
        if other.run_id != self.run_id:
            raise ValueError(f"records of run {other.run_id} cannot join those of run {self.run_id}")
        self.items += other.items
        self.sources += other.sources
        self.artifacts += other.artifacts
        # Stages book metrics of the same item (qc its scores, publish the final loudness): merge by name.
        for item_id, metrics in other.metrics.items():
            self.metrics[item_id] = {**self.metrics.get(item_id, {}), **metrics}
        self.cache += other.cache
        self.attempts += other.attempts
        self.cots += other.cots
        self.states += other.states

    def __len__(self) -> int:
        return sum(map(len, (self.items, self.sources, self.artifacts, self.metrics, self.cache, self.attempts,
                             self.cots, self.states)))


@dataclass
class StageResult:
    """What a stage returns: its batch's items (updated) and the lineage rows to record."""

    items: list[WorkItem]
    records: LineageRecords


def write_records(lin: Lineage, records: LineageRecords) -> None:
    """Record rows. Called by the flow only. The cache rows (the "published" markers) come after the
    artifacts and metrics they vouch for, and the item states last."""
    lin.upsert_items(records.items)
    lin.add_sources(records.run_id, records.sources)
    lin.record_artifacts(records.artifacts)
    lin.record_metrics_many(records.run_id, records.metrics)
    lin.cache_put_many(records.cache)
    lin.record_attempts(records.attempts)
    if records.cots:
        lin.record_cots(records.cots)
    lin.set_item_states(records.run_id, records.states)


class RecordWriter:
    """The driver's lineage writes, gathered and committed together.

    A DuckDB statement costs milliseconds of CPU whatever its size (one commit each), so rows wait
    here until `max_rows` are pending or `max_delay_s` has passed since the last write, then go in one
    statement per table. `flush` writes what is pending: the flow calls it before it reads lineage
    back, when the run ends, and when it fails, so a crash loses at most `max_delay_s` of rows, and a
    rerun adopts published files whose rows were lost (`tasks.reuse`).
    """

    def __init__(self, lin: Lineage, run_id: str, *, max_rows: int = 20_000, max_delay_s: float = 2.0) -> None:
        self.lin, self.run_id = lin, run_id
        self.max_rows, self.max_delay_s = max_rows, max_delay_s
        self._pending = LineageRecords(run_id)
        self._lock = threading.Lock()
        self._last_write = time.monotonic()

    def add(self, records: LineageRecords) -> None:
        with self._lock:
            self._pending.extend(records)
            due = len(self._pending) >= self.max_rows or time.monotonic() - self._last_write >= self.max_delay_s
            if due:
                self._write()

    def flush(self) -> None:
        with self._lock:
            self._write()

    close = flush

    def _write(self) -> None:
        pending, self._pending = self._pending, LineageRecords(self.run_id)
        self._last_write = time.monotonic()
        write_records(self.lin, pending)


def attach_partial(exc: BaseException, result: StageResult) -> None:
    """A stage that raises part-way keeps what it finished: the driver records it, then re-raises."""
    setattr(exc, _PARTIAL, result)


def partial_result(exc: BaseException) -> StageResult | None:
    found = getattr(exc, _PARTIAL, None)
    cause = getattr(exc, "cause", None)  # a Ray task error carries the stage's exception as its cause
    if found is None and cause is not None:
        found = getattr(cause, _PARTIAL, None)
    return found
