"""The loop shared by every flow: ingest, CoT and reuse over large chunks, then the model stages per batch."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context

from prefect.utilities.annotations import quote

from flows.report import RunProgress, stage_listeners
from tasks.config import PipelineSettings
from tasks.cot import write_cot
from tasks.features import extract_features
from tasks.ingest import generation_duration, ingest
from tasks.items import WorkItem
from tasks.outcomes import record_outcomes, record_states
from tasks.publish import publish, reuse_published
from tasks.quality import check_quality, needs_regeneration, settle
from tasks.synthesis import synthesize_batch

# Ingest, CoT and the reuse check work on chunks this large (vLLM batches the CoT requests of a chunk).
PLAN_CHUNK = 256


def _chunks(items: Sequence[WorkItem], size: int) -> Iterator[list[WorkItem]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# Work items go to tasks wrapped in `quote`: they hold no futures, and sparing Prefect the walk through
# every item's fields is most of its per-task overhead on large batches.


class StageClock:
    """Wall time spent per stage, for the run summary; stages may run in several threads at once."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        for listener in stage_listeners:
            listener(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[name] += time.perf_counter() - started


def _check_batch(
    batch_id: str, batch: list[WorkItem], settings: PipelineSettings, run_id: str, clock: StageClock
) -> list[WorkItem]:
    """The model stages for one batch: features, synthesis and checks, with regeneration."""
    with clock.stage("features"):
        batch = extract_features(batch_id, quote(batch), settings, run_id)
    with clock.stage("synthesis"):
        batch = synthesize_batch(batch_id, quote(batch), settings, run_id)
    with clock.stage("qc"):
        batch = check_quality(batch_id, quote(batch), settings, run_id)
    while retry := [i for i in batch if needs_regeneration(i, settings)]:
        for item in retry:
            item.generation += 1
        retry_id = f"{batch_id}-regen{retry[0].generation}"
        with clock.stage("synthesis"):
            retried = synthesize_batch(retry_id, quote(retry), settings, run_id)
        with clock.stage("qc"):
            retried = check_quality(retry_id, quote(retried), settings, run_id)
        by_row = {i.row_key: i for i in retried}
        batch = [by_row.get(i.row_key, i) for i in batch]
    settle(batch)
    return batch


class _Publisher:
    """Publishes one batch in a background thread while the next batch is computed.

    Publishing is mostly FFmpeg muxing and storage writes, so it overlaps well with the model stages.
    One batch at most is in flight: its outcome is settled before the next one starts, and `drain`
    waits for it even when the run is failing, so that finished work is always committed.
    """

    def __init__(self, settings: PipelineSettings, run_id: str, clock: StageClock, outcomes: _Outcomes) -> None:
        self.settings, self.run_id, self.clock, self.outcomes = settings, run_id, clock, outcomes
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish")
        self._in_flight: Future[list[WorkItem]] | None = None
        self._in_flight_batch: list[WorkItem] = []

    def _publish(self, batch_id: str, batch: list[WorkItem]) -> list[WorkItem]:
        with self.clock.stage("publish"):
            return publish(batch_id, quote(batch), self.settings, self.run_id)

    def submit(self, batch_id: str, batch: list[WorkItem]) -> None:
        self.drain()
        self._in_flight_batch = batch
        # The copied context carries Prefect's flow run, so the task run belongs to this flow run.
        self._in_flight = self._executor.submit(copy_context().run, self._publish, batch_id, batch)

    def drain(self) -> None:
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return
        try:
            published = in_flight.result()
        except BaseException:
            # The task updates the items in place: those it published before it failed are settled.
            self.outcomes.settle([i for i in self._in_flight_batch if i.status == "succeeded"])
            raise
        self.outcomes.settle(published)

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._executor.shutdown()


class _Outcomes:
    """Where every source (segment) stands; settles a representative's whole group of duplicates at once."""

    def __init__(self, ingested: list[WorkItem], settings: PipelineSettings, run_id: str) -> None:
        self.settings, self.run_id = settings, run_id
        self.by_source: dict[tuple[str, str], WorkItem] = {i.row_key: i for i in ingested}
        self.groups: dict[str, list[WorkItem]] = defaultdict(list)
        for item in ingested:
            if item.is_pending:
                self.groups[item.work_key].append(item)
        self.progress = RunProgress(run_id, len(ingested))
        self.progress.advance(sum(1 for i in ingested if not i.is_pending))

    @property
    def representatives(self) -> list[WorkItem]:
        return [members[0] for members in self.groups.values()]

    def settle(self, finished: list[WorkItem]) -> None:
        settled: list[WorkItem] = []
        for representative in finished:
            members = self.groups[representative.work_key]
            for duplicate in members[1:]:
                duplicate.adopt_outcome(representative)
            settled += [representative, *members[1:]]
        if not settled:
            return
        for item in settled:
            self.by_source[item.row_key] = item
        record_outcomes(self.run_id, settled, self.settings)
        self.progress.advance(len(settled))


def process_items(
    items: list[WorkItem],
    settings: PipelineSettings,
    run_id: str,
) -> tuple[list[WorkItem], dict[str, float]]:
    """Run every stage over the items; returns them with their outcome and the time per stage.

    Sources with the same work key (same bytes, segment and provided text) are computed once. The cheap
    stages (ingest, CoT, reuse of published results) run over large chunks, which lets vLLM batch many
    requests and makes a cached rerun a handful of task runs; the model stages run per batch, bucketed
    by duration, and each batch is published in the background while the next one is computed.
    """
    if settings.executor != "local":
        raise NotImplementedError(f"executor {settings.executor!r} is not available yet")
    clock = StageClock()
    ingested: list[WorkItem] = []
    for n, chunk in enumerate(_chunks(items, PLAN_CHUNK)):
        with clock.stage("ingest"):
            ingested += ingest(f"{run_id}-ingest{n:03d}", quote(chunk), settings, run_id)
    record_states(run_id, ingested, settings)
    outcomes = _Outcomes(ingested, settings, run_id)

    to_generate: list[WorkItem] = []
    for n, chunk in enumerate(_chunks(outcomes.representatives, PLAN_CHUNK)):
        chunk_id = f"{run_id}-c{n:03d}"
        with clock.stage("cot"):
            chunk = write_cot(chunk_id, quote(chunk), settings, run_id)
        with clock.stage("reuse"):
            chunk = reuse_published(chunk_id, quote(chunk), settings, run_id)
        outcomes.settle([i for i in chunk if not i.is_pending])
        to_generate += [i for i in chunk if i.is_pending]

    to_generate.sort(key=lambda i: (generation_duration(i.duration_sec), i.position))
    publisher = _Publisher(settings, run_id, clock, outcomes)
    try:
        for n, batch in enumerate(_chunks(to_generate, settings.batch_size)):
            batch_id = f"{run_id}-b{n:04d}"
            publisher.submit(batch_id, _check_batch(batch_id, batch, settings, run_id, clock))
    finally:
        publisher.close()
    return [outcomes.by_source[i.row_key] for i in ingested], dict(clock.seconds)
