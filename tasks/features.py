"""Feature stage: video and text features, each cached by content plus the encoder's version."""

from __future__ import annotations

import time

from storage import Stage
from tasks.cache_keys import generation_duration, video_extractor_version
from tasks.config import PipelineSettings
from tasks.executors import Batch
from tasks.handles import Handles
from tasks.items import WorkItem, batch_share
from tasks.records import LineageRecords, StageResult
from tasks.windows import plan_item_windows
from thinksound.features import DecodedClip, VideoDecodeError, decode_clip
from thinksound.features.stream import decode_windows
from thinksound.windows import WindowPlan

# Windows of long videos are encoded in groups of this many as the streamed decode yields them, so
# memory holds a few windows' frames, never a whole video's.
WINDOW_ENCODE_GROUP = 4


def _store_encoded(handles: Handles, pairs: list[tuple[str, DecodedClip]], settings: PipelineSettings) -> None:
    store = handles.store(settings)
    encoded = handles.extractor(settings).encode_videos([clip for _, clip in pairs])
    for (key, _), features in zip(pairs, encoded, strict=True):
        store.put_bytes(key, features.to_bytes())


def _encode_long_video(
    handles: Handles, item: WorkItem, plan: WindowPlan, missing: list[dict], settings: PipelineSettings
) -> None:
    """One streamed decode of the item's segment feeds every missing window, encoded a group at a time."""
    ranges = [(float(plan.window_range_sec(w["index"])[0]), plan.window_sec) for w in missing]
    group: list[tuple[str, DecodedClip]] = []
    clips = decode_windows(item.local_path, ranges, start_sec=item.start_sec)
    for window, clip in zip(missing, clips, strict=True):
        group.append((window["video_features_key"], clip))
        if len(group) == WINDOW_ENCODE_GROUP:
            _store_encoded(handles, group, settings)
            group = []
    if group:
        _store_encoded(handles, group, settings)


def _encode_videos(
    handles: Handles, needs: list[tuple[WorkItem, WindowPlan, list[dict]]], settings: PipelineSettings
) -> None:
    short: list[tuple[str, DecodedClip]] = []
    short_items: list[WorkItem] = []
    for item, plan, missing in needs:
        try:
            if plan.single:
                clip = decode_clip(
                    item.local_path, duration_sec=generation_duration(item.duration_sec), start_sec=item.start_sec
                )
                short.append((missing[0]["video_features_key"], clip))
                short_items.append(item)
            else:
                _encode_long_video(handles, item, plan, missing, settings)
        except VideoDecodeError as exc:
            item.fail(Stage.FEATURES, f"video decoding failed: {exc}")
        except (ValueError, RuntimeError) as exc:
            item.fail(Stage.FEATURES, f"video encoding failed: {exc}")
    if not short:
        return
    try:
        _store_encoded(handles, short, settings)
    except (ValueError, RuntimeError) as exc:
        # A model error (bad shapes, out of memory) fails this batch's items, not the run.
        for item in short_items:
            item.fail(Stage.FEATURES, f"video encoding failed: {exc}")


def _encode_texts(handles: Handles, texts: dict[str, tuple[str, str]], settings: PipelineSettings) -> None:
    """Encode each distinct (caption, CoT) once, under its key."""
    store = handles.store(settings)
    keys = list(texts)
    encoded = handles.extractor(settings).encode_texts([texts[k][0] for k in keys], [texts[k][1] for k in keys])
    for key, features in zip(keys, encoded, strict=True):
        store.put_bytes(key, features.to_bytes())


def run_features(handles: Handles, batch: Batch) -> StageResult:
    """Extract the missing features of a batch, batched across items; cached ones are reused."""
    settings, items = batch.settings, batch.items
    store = handles.store(settings)
    started = time.time()
    pending = [i for i in items if i.is_pending]
    need_video: list[tuple[WorkItem, WindowPlan, list[dict]]] = []
    need_text: dict[str, tuple[str, str]] = {}
    text_items: dict[str, list[WorkItem]] = {}
    for item in pending:
        # No caption and no CoT means video-only generation with the model's learned empty text.
        plan = plan_item_windows(item, settings)
        missing = [w for w in item.windows if not store.exists(w["video_features_key"])]
        if missing:
            need_video.append((item, plan, missing))
        for w in item.windows:
            key = w["text_features_key"]
            if key is not None and key not in need_text and not store.exists(key):
                need_text[key] = (item.caption, w["caption_cot"])
            if key in need_text:
                text_items.setdefault(key, []).append(item)
    if need_video:
        _encode_videos(handles, need_video, settings)
    live = {k: v for k, v in need_text.items() if any(i.is_pending for i in text_items[k])}
    if live:
        _encode_texts(handles, live, settings)
    finished = time.time()
    missing_count = {id(i): len(m) for i, _, m in need_video}
    computed = {id(i) for i, _, _ in need_video} | {id(i) for k in live for i in text_items[k]}
    records = LineageRecords(batch.run_id)
    for n, item in enumerate(pending):
        item_started, item_finished = batch_share(started, finished, n, len(pending))
        if item.is_pending:
            item.next_stage = Stage.SYNTHESIS
        records.attempt(
            Stage.FEATURES,
            item,
            status="failed" if item.status == "failed" else ("succeeded" if id(item) in computed else "cached"),
            input_hash=item.video_features_key,
            params={
                "text_key": item.text_features_key,
                "precision": settings.precision,
                "windows": len(item.windows),
                "video_windows_computed": missing_count.get(id(item), 0),
            },
            model_version=video_extractor_version(settings),
            started_at=item_started,
            finished_at=item_finished,
            error=item.error if item.status == "failed" else None,
        )
    return StageResult(items, records)

