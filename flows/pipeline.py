"""The batch loop shared by every flow: ingest, then per batch CoT -> features -> synthesis -> QC -> publish."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence

from flows.report import RunProgress, stage_listeners
from storage import CotRecord
from tasks import runtime
from tasks.config import PipelineSettings
from tasks.cot import write_cot
from tasks.features import extract_features
from tasks.ingest import generation_duration, ingest
from tasks.items import WorkItem
from tasks.publish import publish, reuse_published
from tasks.quality import check_quality, needs_regeneration, settle
from tasks.synthesis import synthesize_batch

INGEST_CHUNK = 64


def _chunks(items: Sequence[WorkItem], size: int) -> Iterator[list[WorkItem]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class StageClock:
    """Wall time spent per stage, for the run summary."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        for listener in stage_listeners:
            listener(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started


def _state_row(item: WorkItem) -> dict[str, object]:
    return dict(source=item.source, item_id=item.item_id, status=item.status, stage=item.stage, error=item.error)


def _copy_outcome(representative: WorkItem, duplicate: WorkItem) -> None:
    """A duplicate source shares the representative's work and therefore its outcome and outputs."""
    for name in (
        "caption", "caption_cot", "cot_backend", "cot_key", "cot_record", "t5_tokens", "result_key", "seed",
        "generation", "status", "stage", "error", "cached", "metrics", "rejection_reasons",
        "audio_uri", "video_uri", "metrics_uri",
    ):
        setattr(duplicate, name, getattr(representative, name))


def _record_cot(run_id: str, items: list[WorkItem], settings: PipelineSettings) -> None:
    """One CoT row per source, duplicates included, so every source shows the text it was dubbed with."""
    columns = {f.name for f in dataclasses.fields(CotRecord)}
    records = [
        CotRecord(
            **{
                **{k: v for k, v in item.cot_record.items() if k in columns},
                "run_id": run_id,
                "item_id": item.item_id,
                "source": item.source,
            }
        )
        for item in items
        if item.cot_record is not None
    ]
    if records:
        runtime.lineage(settings).record_cots(records)


def _process_batch(
    batch_id: str, batch: list[WorkItem], settings: PipelineSettings, run_id: str, clock: StageClock
) -> list[WorkItem]:
    with clock.stage("cot"):
        batch = write_cot(batch_id, batch, settings, run_id)
    with clock.stage("reuse"):
        batch = reuse_published(batch_id, batch, settings, run_id)
    if not any(i.is_pending for i in batch):
        return batch
    with clock.stage("features"):
        batch = extract_features(batch_id, batch, settings, run_id)
    with clock.stage("synthesis"):
        batch = synthesize_batch(batch_id, batch, settings, run_id)
    with clock.stage("qc"):
        batch = check_quality(batch_id, batch, settings, run_id)
    while retry := [i for i in batch if needs_regeneration(i, settings)]:
        for item in retry:
            item.generation += 1
        retry_id = f"{batch_id}-regen{retry[0].generation}"
        with clock.stage("synthesis"):
            retried = synthesize_batch(retry_id, retry, settings, run_id)
        with clock.stage("qc"):
            retried = check_quality(retry_id, retried, settings, run_id)
        by_source = {i.source: i for i in retried}
        batch = [by_source.get(i.source, i) for i in batch]
    settle(batch)
    with clock.stage("publish"):
        return publish(batch_id, batch, settings, run_id)


def process_items(
    items: list[WorkItem],
    settings: PipelineSettings,
    run_id: str,
) -> tuple[list[WorkItem], dict[str, float]]:
    """Run every stage over the items; returns them with their outcome and the time per stage.

    Sources with the same work key (same bytes, segment and provided text) are computed once.
    """
    lin = runtime.lineage(settings)
    clock = StageClock()
    ingested: list[WorkItem] = []
    for n, chunk in enumerate(_chunks(items, INGEST_CHUNK)):
        with clock.stage("ingest"):
            ingested += ingest(f"{run_id}-ingest{n:03d}", chunk, settings, run_id)
    lin.set_item_states(run_id, [_state_row(i) for i in ingested])

    groups: dict[str, list[WorkItem]] = defaultdict(list)
    for item in ingested:
        if item.is_pending:
            groups[item.work_key].append(item)
    representatives = sorted(
        (members[0] for members in groups.values()),
        key=lambda i: (generation_duration(i.duration_sec), i.position),
    )
    progress = RunProgress(run_id, len(ingested))
    progress.advance(sum(1 for i in ingested if not i.is_pending))

    outcome: dict[str, WorkItem] = {i.source: i for i in ingested}
    for n, batch in enumerate(_chunks(representatives, settings.batch_size)):
        batch_id = f"{run_id}-b{n:04d}"
        finished = _process_batch(batch_id, batch, settings, run_id, clock)
        settled: list[WorkItem] = []
        for representative in finished:
            members = groups[representative.work_key]
            for duplicate in members[1:]:
                _copy_outcome(representative, duplicate)
            settled += [representative, *members[1:]]
        for item in settled:
            outcome[item.source] = item
        lin.set_item_states(run_id, [_state_row(i) for i in settled])
        _record_cot(run_id, settled, settings)
        progress.advance(len(settled))
    return [outcome[i.source] for i in ingested], dict(clock.seconds)
