"""Feature stage: video and text features, each cached by content plus the encoder's version."""

from __future__ import annotations

import time

from tasks.cache_keys import (
    generation_duration,
    text_features_key,
    video_extractor_version,
    video_features_key,
)
from tasks.config import PipelineSettings
from tasks.executors import Batch, Executor
from tasks.handles import Handles
from tasks.items import WorkItem, batch_share
from tasks.records import LineageRecords, StageResult
from tasks.retry import stage_task
from thinksound.features import VideoDecodeError, decode_clip


def _encode_videos(handles: Handles, items: list[WorkItem], settings: PipelineSettings) -> None:
    store = handles.store(settings)
    clips, decoded_items = [], []
    for item in items:
        try:
            clips.append(
                decode_clip(
                    item.local_path,
                    duration_sec=generation_duration(item.duration_sec),
                    start_sec=item.start_sec,
                )
            )
            decoded_items.append(item)
        except VideoDecodeError as exc:
            item.fail("features", f"video decoding failed: {exc}")
    if not clips:
        return
    try:
        encoded = handles.extractor(settings).encode_videos(clips)
    except (ValueError, RuntimeError) as exc:
        # A model error (bad shapes, out of memory) fails this batch's items, not the run.
        for item in decoded_items:
            item.fail("features", f"video encoding failed: {exc}")
        return
    for item, features in zip(decoded_items, encoded, strict=True):
        store.put_bytes(item.video_features_key, features.to_bytes())


def _encode_texts(handles: Handles, items: list[WorkItem], settings: PipelineSettings) -> None:
    store = handles.store(settings)
    encoded = handles.extractor(settings).encode_texts(
        [i.caption for i in items], [i.caption_cot for i in items]
    )
    for item, features in zip(items, encoded, strict=True):
        store.put_bytes(item.text_features_key, features.to_bytes())


def run_features(handles: Handles, batch: Batch) -> StageResult:
    """Extract the missing features of a batch, batched across items; cached ones are reused."""
    settings, items = batch.settings, batch.items
    store = handles.store(settings)
    started = time.time()
    pending = [i for i in items if i.is_pending]
    need_video, need_text = [], []
    for item in pending:
        item.video_features_key = video_features_key(item, settings)
        # No caption and no CoT means video-only generation with the model's learned empty text.
        has_text = bool(item.caption or item.caption_cot)
        item.text_features_key = text_features_key(item, settings) if has_text else None
        if not store.exists(item.video_features_key):
            need_video.append(item)
        if has_text and not store.exists(item.text_features_key):
            need_text.append(item)
    if need_video:
        _encode_videos(handles, need_video, settings)
    text_targets = [i for i in need_text if i.is_pending]
    if text_targets:
        _encode_texts(handles, text_targets, settings)
    finished = time.time()
    computed = {id(i) for i in need_video} | {id(i) for i in need_text}
    records = LineageRecords(batch.run_id)
    for n, item in enumerate(pending):
        item_started, item_finished = batch_share(started, finished, n, len(pending))
        if item.is_pending:
            item.stage = "synthesis"
        records.attempt(
            "features",
            item,
            status="failed" if item.status == "failed" else ("succeeded" if id(item) in computed else "cached"),
            input_hash=item.video_features_key,
            params={"text_key": item.text_features_key, "precision": settings.precision},
            model_version=video_extractor_version(settings),
            started_at=item_started,
            finished_at=item_finished,
            error=item.error if item.status == "failed" else None,
        )
    return StageResult(items, records)


@stage_task("features")
def extract_features(batch_id: str, batch: Batch, executor: Executor) -> StageResult:
    """The feature stage over a batch (a model stage)."""
    return executor.run(run_features, batch, models=True)
