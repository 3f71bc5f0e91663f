"""The loop shared by every flow: ingest, CoT and reuse over large chunks, then the model stages per batch."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextvars import copy_context

from prefect import task
from prefect.cache_policies import NONE
from prefect.utilities.annotations import quote

from flows.report import RunProgress, stage_listeners
from tasks.cache_keys import generation_duration
from tasks.config import PipelineSettings
from tasks.cot import write_cot
from tasks.executors import Batch, Executor, StageFn, open_executor
from tasks.features import run_features
from tasks.handles import process_handles
from tasks.ingest import hash_memo_keys, ingest
from tasks.items import WorkItem
from tasks.outcomes import outcome_records
from tasks.publication import PublicationClaims
from tasks.publish import run_publish
from tasks.quality import needs_regeneration, run_quality, settle
from tasks.records import RecordWriter, StageResult, partial_result
from tasks.retry import with_transient_retries
from tasks.reuse import reuse_candidates, reuse_published
from tasks.run_lineage import Lineage
from tasks.synthesis import run_synthesis

# Ingest, CoT and the reuse check work on chunks this large (vLLM batches the CoT requests of a chunk).
PLAN_CHUNK = 256


def _chunks(items: Sequence[WorkItem], size: int) -> Iterator[list[WorkItem]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# Batches go to tasks wrapped in `quote`: they hold no futures, and sparing Prefect the walk through
# every item's fields is most of its per-task overhead on large batches.


def _chunk_task(stage_task, chunk_id: str, executor: Executor, batch: Batch) -> StageResult:
    """A chunk's stage as its own task run (ingest, CoT: a few per run)."""
    return stage_task(chunk_id, quote(batch), quote(executor))


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


class _Stages:
    """Runs stages through the executor and records what they return: the flow's one writer."""

    def __init__(self, executor: Executor, writer: RecordWriter, settings: PipelineSettings, run_id: str,
                 clock: StageClock) -> None:
        self.executor, self.writer, self.settings, self.run_id, self.clock = executor, writer, settings, run_id, clock

    def run(
        self, stage: str, call: Callable[[Batch], StageResult], items: list[WorkItem],
        cached: dict[str, str] | None = None,
    ) -> list[WorkItem]:
        """`call` runs the stage over the batch: a chunk's stage task, or a batch's stage on the executor."""
        batch = Batch(self.run_id, items, self.settings, cached or {})
        with self.clock.stage(stage):
            try:
                result = call(batch)
            except BaseException as exc:
                # What the stage finished before it raised is recorded before the error goes up.
                partial = partial_result(exc)
                if partial is not None:
                    self.writer.add(partial.records)
                    exc.finished_items = [i for i in partial.items if i.status == "succeeded"]
                raise
            self.writer.add(result.records)
        return result.items

    def compute(self, stage: str, fn: StageFn, items: list[WorkItem], *, models: bool) -> list[WorkItem]:
        """One of a batch's stages, on the executor; transient errors are retried."""
        def call(batch: Batch) -> StageResult:
            return with_transient_retries(lambda: self.executor.run(fn, batch, models=models))

        return self.run(stage, call, items)

    def check_batch(self, batch: list[WorkItem]) -> list[WorkItem]:
        """The model stages for one batch: features, synthesis and checks, with regeneration."""
        batch = self.compute("features", run_features, batch, models=True)
        batch = self.compute("synthesis", run_synthesis, batch, models=True)
        batch = self.compute("qc", run_quality, batch, models=True)
        while retry := [i for i in batch if needs_regeneration(i, self.settings)]:
            for item in retry:
                item.generation += 1
            retried = self.compute("synthesis", run_synthesis, retry, models=True)
            retried = self.compute("qc", run_quality, retried, models=True)
            by_row = {i.row_key: i for i in retried}
            batch = [by_row.get(i.row_key, i) for i in batch]
        settle(batch)
        return batch


@task(name="batch", task_run_name="batch-{batch_id}", cache_policy=NONE)
def dub_batch(batch_id: str, chain: Callable[[], None]) -> None:
    """One batch through the model stages and publishing.

    One task run per batch, not per stage: a task run costs the driver ~4 ms of CPU, and a run per
    stage was 2 ms per item at the default batch size. Each stage's attempts and times are in lineage.
    """
    chain()


class _BatchLine:
    """Runs each batch's chain (model stages, then publish) in a few threads, so that while one batch
    is on the models the others are published (and, on Ray, one batch per model worker computes).

    The model stages pass a gate sized to the executor's model workers: in this process, one batch
    computes while the previous one publishes, as before. On a failure no new batch starts, the
    batches in flight finish (finished work is always committed), then the error goes up.
    """

    def __init__(self, stages: _Stages, outcomes: _Outcomes, executor: Executor, claims: PublicationClaims) -> None:
        self.stages, self.outcomes, self.claims = stages, outcomes, claims
        self._gate = threading.Semaphore(executor.parallel_batches)
        self._pool = ThreadPoolExecutor(max_workers=executor.parallel_batches + 1, thread_name_prefix="batch")

    def _chain(self, batch: list[WorkItem]) -> None:
        with self._gate:
            checked = self.stages.check_batch(batch)
        try:
            ours, theirs = self.claims.split(checked)
            published = self.stages.compute("publish", run_publish, ours, models=False)
            self.claims.release_unpublished(published)
            self.outcomes.settle(published)
            if theirs:
                adopted, records = self.claims.settle_theirs(
                    theirs, lambda items: self.stages.compute("publish", run_publish, items, models=False)
                )
                self.stages.writer.add(records)
                self.outcomes.settle(adopted)
        except BaseException as exc:
            self.outcomes.settle(getattr(exc, "finished_items", []))
            raise

    def run(self, batches: Iterator[tuple[str, list[WorkItem]]]) -> None:
        in_flight: set[Future[None]] = set()
        error: BaseException | None = None
        try:
            for batch_id, batch in batches:
                # The copied context carries Prefect's flow run, so task runs belong to this flow run.
                chain = functools.partial(self._chain, batch)
                in_flight.add(self._pool.submit(copy_context().run, dub_batch, batch_id, quote(chain)))
                if len(in_flight) > self._pool._max_workers:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    error = next((f.exception() for f in done if f.exception() is not None), None)
                    if error is not None:
                        break
        finally:
            done, _ = wait(in_flight)
            self._pool.shutdown()
        error = error or next((f.exception() for f in done if f.exception() is not None), None)
        if error is not None:
            raise error


class _Outcomes:
    """Where every source (segment) stands; settles a representative's whole group of duplicates at once."""

    def __init__(self, ingested: list[WorkItem], writer: RecordWriter, run_id: str) -> None:
        self.writer, self.run_id = writer, run_id
        self._lock = threading.Lock()
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
        with self._lock:
            for item in settled:
                self.by_source[item.row_key] = item
            self.writer.add(outcome_records(self.run_id, settled))
            self.progress.advance(len(settled))


def process_items(
    items: list[WorkItem],
    settings: PipelineSettings,
    run_id: str,
    lin: Lineage,
) -> tuple[list[WorkItem], dict[str, float]]:
    """Run every stage over the items; returns them with their outcome and the time per stage.

    Sources with the same work key (same bytes, segment and provided text) are computed once. The cheap
    stages (ingest, CoT, reuse of published results) run over large chunks, which lets vLLM batch many
    requests and makes a cached rerun a handful of task runs; the model stages run per batch, bucketed
    by duration, and batches are published while others compute. Stages compute where the executor
    puts them (this process, or Ray workers); this function, in the driver, records everything.
    """
    clock = StageClock()
    writer = RecordWriter(lin, run_id)
    with open_executor(settings) as executor, contextlib.closing(writer):
        stages = _Stages(executor, writer, settings, run_id, clock)
        ingested: list[WorkItem] = []
        for n, chunk in enumerate(_chunks(items, PLAN_CHUNK)):
            known = lin.cache_get_many(hash_memo_keys(chunk, settings))
            chunk_id = f"{run_id}-ingest{n:03d}"
            call = functools.partial(_chunk_task, ingest, chunk_id, executor)
            ingested += stages.run("ingest", call, chunk, known)
        writer.add(outcome_records(run_id, ingested))
        writer.flush()  # every source has its row before the first batch settles
        outcomes = _Outcomes(ingested, writer, run_id)

        to_generate: list[WorkItem] = []
        handles = process_handles()
        for n, chunk in enumerate(_chunks(outcomes.representatives, PLAN_CHUNK)):
            chunk_id = f"{run_id}-c{n:03d}"
            chunk = stages.run("cot", functools.partial(_chunk_task, write_cot, chunk_id, executor), chunk)
            with clock.stage("reuse"):
                published = lin.cache_get_many(reuse_candidates(chunk, settings))
                result = reuse_published(chunk_id, quote(Batch(run_id, chunk, settings, published)), handles)
                writer.add(result.records)
            chunk = result.items
            outcomes.settle([i for i in chunk if not i.is_pending])
            to_generate += [i for i in chunk if i.is_pending]

        to_generate.sort(key=lambda i: (generation_duration(i.duration_sec), i.position))
        batches = ((f"{run_id}-b{n:04d}", batch) for n, batch in enumerate(_chunks(to_generate, settings.batch_size)))
        claims = PublicationClaims(lin, handles, settings, run_id)
        _BatchLine(stages, outcomes, executor, claims).run(batches)
    return [outcomes.by_source[i.row_key] for i in ingested], dict(clock.seconds)
