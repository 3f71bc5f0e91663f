"""Stage results: the items a stage worked on plus the lineage rows it produced, written by the driver.

Stages run anywhere (this process, or a Ray worker on another machine) and never open lineage: they
return a `StageResult`, and the flow in the driver, the only lineage writer, hands its `records` to
`write_records`. Attempt rows are made here, in the process that ran the compute, which they name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from storage import Lineage, SourceRow
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

    def attempt(self, stage: str, item: WorkItem, *, status: str, **fields: object) -> None:
        """Book one stage attempt of one item (see `tasks.items.attempt`)."""
        self.attempts.append(attempt(self.run_id, stage, item, status=status, **fields))

    def extend(self, other: LineageRecords) -> None:
        if other.run_id != self.run_id:
            raise ValueError(f"records of run {other.run_id} cannot join those of run {self.run_id}")
        self.items += other.items
        self.sources += other.sources
        self.artifacts += other.artifacts
        self.metrics.update(other.metrics)
        self.cache += other.cache
        self.attempts += other.attempts


@dataclass
class StageResult:
    """What a stage returns: its batch's items (updated) and the lineage rows to record."""

    items: list[WorkItem]
    records: LineageRecords


def write_records(lin: Lineage, records: LineageRecords) -> None:
    """Record a stage's rows. Called by the flow only. The cache rows (the "published" markers) come
    after the artifacts and metrics they vouch for, and the attempts last."""
    lin.upsert_items(records.items)
    lin.add_sources(records.run_id, records.sources)
    lin.record_artifacts(records.artifacts)
    lin.record_metrics_many(records.run_id, records.metrics)
    lin.cache_put_many(records.cache)
    lin.record_attempts(records.attempts)


def attach_partial(exc: BaseException, result: StageResult) -> None:
    """A stage that raises part-way keeps what it finished: the driver records it, then re-raises."""
    setattr(exc, _PARTIAL, result)


def partial_result(exc: BaseException) -> StageResult | None:
    found = getattr(exc, _PARTIAL, None)
    cause = getattr(exc, "cause", None)  # a Ray task error carries the stage's exception as its cause
    if found is None and cause is not None:
        found = getattr(cause, _PARTIAL, None)
    return found
