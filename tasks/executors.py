"""Where the stages compute: in this process (`LocalExecutor`) or on a Ray cluster (`RayExecutor`).

A stage is a pure function `fn(handles, batch) -> StageResult`. The flow's Prefect task runs in the
driver and hands that function to the run's executor; the result comes back to the driver, which
alone writes lineage. Model stages (features, synthesis, QC) go to model workers, which keep their
models warm; the CPU stages (ingest, CoT, publish) go to plain CPU tasks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from tasks.config import PipelineSettings
from tasks.handles import Handles, process_handles
from tasks.items import WorkItem
from tasks.records import StageResult


@dataclass
class Batch:
    """What a stage works on: items of one run, and the run's settings."""

    run_id: str
    items: list[WorkItem]
    settings: PipelineSettings
    # Lineage cache entries the driver looked up for this batch (a stage never reads lineage itself).
    cached: dict[str, str] = field(default_factory=dict)


StageFn = Callable[[Handles, Batch], StageResult]


class Executor(Protocol):
    # How many batches the flow keeps in flight (the local executor overlaps publishing only).
    parallel_batches: int

    def run(self, fn: StageFn, batch: Batch, *, models: bool) -> StageResult:
        """Run one stage over one batch; `models` marks a model (GPU) stage."""

    def close(self) -> None: ...


class LocalExecutor:
    """Every stage in this process, with this process's warm models."""

    parallel_batches = 1

    def __init__(self, handles: Handles | None = None) -> None:
        self.handles = handles or process_handles()

    def run(self, fn: StageFn, batch: Batch, *, models: bool) -> StageResult:
        return fn(self.handles, batch)

    def close(self) -> None:
        """Nothing to release: the models stay warm for the next run in this process."""


@contextlib.contextmanager
def open_executor(settings: PipelineSettings) -> Iterator[Executor]:
    """The executor the settings ask for, released when the run ends (a Ray started for it stops)."""
    if settings.executor == "ray":
        from tasks.ray_executor import RayExecutor

        executor: Executor = RayExecutor(settings)
    else:
        executor = LocalExecutor()
    try:
        yield executor
    finally:
        executor.close()
