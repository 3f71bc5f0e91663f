"""The driver's cost per item: orchestration, lineage and bookkeeping in the driver process, per item.

The stages' compute is replaced by stand-ins that update items and return the same lineage records a
real stage returns (keys, attempts, artifacts, metrics, markers) without any model, FFmpeg or file
work. Everything else is the real driver path: the `dub` flow with its Prefect task runs, lineage
writes to the DuckDB file, duplicate grouping, outcomes, progress and the report. Its CPU time (and
wall time) divided by the items is the driver's cost per item: what one driver can feed.
"""

from __future__ import annotations

import contextlib
import resource
import time

from prefect import flow

from storage import SourceRow, Stage
from tasks.cache_keys import generator_version, output_keys, published_marker, raw_audio_key, result_key
from tasks.executors import Batch, LocalExecutor
from tasks.items import WorkItem, item_identity, stable_hash
from tasks.records import LineageRecords, StageResult

METRICS = ("lufs", "true_peak_dbtp", "clipping_ratio", "silence_ratio", "duration_sec", "rms_dbfs")


def _ingest(batch: Batch, records: LineageRecords) -> None:
    for item in batch.items:
        item.content_hash = stable_hash("bench", item.source)
        item.duration_sec = item.video_duration_sec = 2.0
        item.video_codec = "h264"
        item.local_path = item.source
        item.item_id = item_identity(item.content_hash, item.start_sec, item.duration_sec)
        item.next_stage = Stage.COT
        records.items.append(dict(item_id=item.item_id, content_hash=item.content_hash, start_sec=0.0,
                                  duration_sec=2.0, probe={"codec": "h264"}))
        records.sources.append(SourceRow(source=item.source, item_id=item.item_id, position=item.position))
        records.attempt(Stage.INGEST, item, status="succeeded", input_hash=item.content_hash,
                        params={"start_sec": 0.0, "duration_sec": 2.0}, started_at=time.time(), finished_at=time.time())


def _cot(batch: Batch, records: LineageRecords) -> None:
    for item in batch.items:
        item.cot_record = {"backend": "provided", "caption": "", "caption_cot": "", "t5_tokens": 0}
        item.next_stage = Stage.FEATURES
        records.attempt(Stage.COT, item, status="succeeded", params={"backend": "provided"},
                        started_at=time.time(), finished_at=time.time())


def _model_stage(stage: Stage, next_stage: Stage):
    def run(batch: Batch, records: LineageRecords) -> None:
        for item in batch.items:
            if stage == Stage.SYNTHESIS:
                item.result_key = item.result_key or result_key(item, batch.settings)
                item.seed = 1
                item.raw_audio_key = raw_audio_key(item, 0)
            if stage == Stage.QC:
                item.metrics = {name: -1.0 for name in METRICS}
            item.next_stage = next_stage
            records.attempt(stage, item, status="succeeded", input_hash=item.result_key,
                            params=batch.settings.synthesis_params(), model_version=generator_version(batch.settings),
                            started_at=time.time(), finished_at=time.time())

    return run


def _publish(batch: Batch, records: LineageRecords) -> None:
    for item in batch.items:
        if not (item.is_pending and item.next_stage == Stage.PUBLISH):
            continue
        keys = output_keys(item)
        item.audio_uri, item.video_uri, item.metrics_uri = (f"file:///bench/{keys[k]}" for k in ("audio", "video",
                                                                                                 "metrics"))
        item.status = "succeeded"
        records.artifacts += [dict(item_id=item.item_id, kind=k, uri=f"file:///bench/{v}", key=v,
                                   run_id=batch.run_id) for k, v in keys.items()]
        records.metrics[item.item_id] = dict(item.metrics)
        records.cache.append((published_marker(item.result_key), "published", item.metrics_uri))
        records.attempt(Stage.PUBLISH, item, status="succeeded", input_hash=item.result_key,
                        started_at=time.time(), finished_at=time.time())


STAND_INS = {
    "run_ingest": _ingest,
    "run_cot": _cot,
    "run_features": _model_stage(Stage.FEATURES, Stage.SYNTHESIS),
    "run_synthesis": _model_stage(Stage.SYNTHESIS, Stage.QC),
    "run_quality": _model_stage(Stage.QC, Stage.QC),
    "run_publish": _publish,
}


class NoComputeExecutor(LocalExecutor):
    """Stages that return what a real stage returns, computing nothing."""

    def run(self, fn, batch: Batch, *, models: bool) -> StageResult:
        records = LineageRecords(batch.run_id)
        STAND_INS[fn.__name__](batch, records)
        return StageResult(batch.items, records)


@contextlib.contextmanager
def _no_compute():
    import flows.pipeline as pipeline

    saved = pipeline.open_executor

    @contextlib.contextmanager
    def open_executor(settings):
        yield NoComputeExecutor()

    pipeline.open_executor = open_executor
    try:
        yield
    finally:
        pipeline.open_executor = saved


@flow(name="driver_cost_bench")
def _driver_flow(n_items: int, settings, run_id: str) -> dict:
    """Like `dub_dataset`, whose parameter is the input's name: the sources are listed inside the flow."""
    from flows.dub import run_sources

    items = [WorkItem(source=f"/bench/clip{n:07d}.mp4", position=n) for n in range(n_items)]
    return run_sources(items, settings, run_id=run_id, input_label="bench")


def driver_cost(n_items: int, settings) -> dict[str, float]:
    """CPU and wall seconds per item of the whole driver path over `n_items` stand-in items."""
    with _no_compute():
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        _driver_flow(n_items, settings, f"driver-{n_items}")
        cpu, wall = _cpu_s() - cpu0, time.perf_counter() - wall0
    return {"items": n_items, "cpu_ms_per_item": cpu / n_items * 1e3, "wall_ms_per_item": wall / n_items * 1e3}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
