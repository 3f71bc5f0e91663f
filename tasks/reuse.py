"""Reuse: items whose exact result is already published are settled without recomputing them.

The flow looks up the "published" markers of a chunk's result keys in lineage and passes them in
`Batch.cached`; this step checks the files and returns the rows that re-point the items to them. It
runs in the driver: a few store lookups per item, no models.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from prefect import task
from prefect.cache_policies import NONE

from storage import ArtifactStore, Stage
from tasks.cache_keys import output_keys, published_marker, result_key
from tasks.config import PipelineSettings
from tasks.executors import Batch
from tasks.handles import Handles
from tasks.items import WorkItem
from tasks.publish import artifact_rows
from tasks.records import LineageRecords, StageResult
from tasks.windows import plan_item_windows


def reuse_candidates(items: list[WorkItem], settings: PipelineSettings) -> list[str]:
    """Give each item that reached synthesis its result key; returns the markers to look up."""
    candidates = [i for i in items if i.is_pending and i.next_stage == Stage.FEATURES]
    for item in candidates:
        item.result_key = result_key(item, settings)
    return [published_marker(i.result_key) for i in candidates]


def run_reuse(handles: Handles, batch: Batch) -> StageResult:
    """Mark items whose exact result was already published as succeeded (call `reuse_candidates` first)."""
    store = handles.store(batch.settings)
    records = LineageRecords(batch.run_id)
    for item in (i for i in batch.items if i.is_pending and i.next_stage == Stage.FEATURES and i.result_key):
        if _adopt(item, store, batch, records):
            # Its windows, so that lineage records this run's CoT window by window, as a computed item's.
            plan_item_windows(item, batch.settings)
    return StageResult(batch.items, records)


def adopt_publications(handles: Handles, batch: Batch, owners: Mapping[str, str]) -> StageResult:
    """Items ready to publish whose result another run (`owners`: result key -> run id) has published:
    re-pointed to that run's files, as succeeded; the others stay pending."""
    store = handles.store(batch.settings)
    records = LineageRecords(batch.run_id)
    for item in (i for i in batch.items if i.is_pending and i.next_stage == Stage.PUBLISH):
        _adopt(item, store, batch, records, details={"published_by": owners.get(item.result_key)})
    return StageResult(batch.items, records)


def _adopt(item: WorkItem, store: ArtifactStore, batch: Batch, records: LineageRecords,
           details: dict[str, object] | None = None) -> bool:
    """Settle the item on its published files when they are all there; False when they are not."""
    keys = output_keys(item)
    if not all(store.exists(k) for k in keys.values()):
        return False
    marker = published_marker(item.result_key)
    if marker not in batch.cached:
        metrics = metrics_from_published_record(store.get_bytes(keys["metrics"]))
        if metrics is None:
            return False
        records.metrics[item.item_id] = metrics
        records.cache.append((marker, "published", store.uri(keys["metrics"])))
    item.status, item.next_stage, item.cached = "succeeded", Stage.PUBLISH, True
    item.audio_uri, item.video_uri, item.metrics_uri = (
        store.uri(keys[k]) for k in ("audio", "video", "metrics")
    )
    # Re-point the item's artifacts: a run with other parameters may have published since.
    records.artifacts += artifact_rows(item, batch.run_id)
    now = time.time()
    records.attempt(Stage.PUBLISH, item, status="cached", input_hash=item.result_key, started_at=now, finished_at=now,
                    details=details)
    return True


def metrics_from_published_record(blob: bytes) -> dict[str, object] | None:
    """The lineage metrics of an item whose files were published by a run killed before recording them.

    The metrics file is written last, atomically, under a key derived from every input and parameter,
    so its presence means the audio and video beside it are complete; an unreadable one means redo.
    """
    try:
        record = json.loads(blob)
        metrics = {
            **record["qc_raw"],
            **{f"final_{k}": v for k, v in record["final"].items()},
            "loudness_gain_db": record["loudness_gain_db"],
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return {k: v for k, v in metrics.items() if v is None or isinstance(v, (int, float))}


@task(name="reuse", task_run_name="reuse-{batch_id}", cache_policy=NONE)
def reuse_published(batch_id: str, batch: Batch, handles: Handles) -> StageResult:
    """The reuse step over a chunk, in the driver (store lookups only)."""
    return run_reuse(handles, batch)
