"""The windows of one item: its plan, and per window the CoT, cache keys and seed the stages use.

An item's windows are plain dicts on the WorkItem (so they travel with it and land in lineage and
metrics.json): index, start_sec / end_sec within the segment, the CoT and its id, the video and text
feature keys, the generation that last drew its noise, and its seed.
"""

from __future__ import annotations

import json
import math

from tasks.cache_keys import generation_duration, text_encoder_version, video_extractor_version
from tasks.config import PipelineSettings
from tasks.items import WorkItem, stable_hash
from thinksound.config import preset
from thinksound.windows import WindowPlan, plan_windows, window_seed

# Part of every multi-window video feature key: the streamed decode's frame grid (see stream.py).
STREAM_DECODE_VERSION = "1"


def item_plan(item: WorkItem, settings: PipelineSettings) -> WindowPlan:
    return plan_windows(
        preset(settings.preset),
        generation_duration(item.duration_sec),
        overlap_sec=settings.window_overlap_sec,
    )


def text_features_key(caption: str, caption_cot: str, settings: PipelineSettings) -> str:
    digest = stable_hash(caption, caption_cot, text_encoder_version(settings))
    return f"features/text/{digest[:2]}/{digest}.safetensors"


def video_window_key(item: WorkItem, plan: WindowPlan, index: int, settings: PipelineSettings) -> str:
    """Video hash + window range + extractor version. A one-window item keeps its segment's key."""
    version = video_extractor_version(settings)
    if plan.single:
        digest = stable_hash(
            item.content_hash, round(item.start_sec, 3), generation_duration(item.duration_sec), version
        )
    else:
        start, _ = plan.window_range_sec(index)
        digest = stable_hash(
            item.content_hash,
            round(item.start_sec + start, 3),
            plan.window_sec,
            version,
            STREAM_DECODE_VERSION,
        )
    return f"features/video/{digest[:2]}/{digest}.safetensors"


def parse_window_cots(text: str | None) -> list[dict[str, object]] | None:
    """A manifest `caption_cot` that is a JSON list of {"start", "end", "cot"} (seconds within the
    segment) gives per-window CoTs; any other text is one CoT for every window. Raises ValueError when
    the list is malformed."""
    if not text or not text.lstrip().startswith("["):
        return None
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"caption_cot looks like a JSON list but is not valid JSON: {exc}") from None
    parsed = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"start", "end", "cot"} <= entry.keys():
            raise ValueError(f"caption_cot entry {n} needs 'start', 'end' and 'cot'")
        start, end = float(entry["start"]), float(entry["end"])
        if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
            raise ValueError(f"caption_cot entry {n} has a bad time range [{start}, {end}]")
        parsed.append({"start": start, "end": end, "cot": str(entry["cot"]).strip()})
    if not parsed:
        raise ValueError("caption_cot is an empty JSON list")
    return parsed


def _cot_for(start: float, end: float, entries: list[dict[str, object]]) -> str:
    """The CoT whose time range overlaps the window most (the nearest one when none overlaps)."""

    def score(entry: dict[str, object]) -> tuple[float, float]:
        a, b = float(entry["start"]), float(entry["end"])
        return min(end, b) - max(start, a), -abs((a + b) / 2 - (start + end) / 2)

    return str(max(entries, key=score)["cot"])


def plan_item_windows(item: WorkItem, settings: PipelineSettings) -> WindowPlan:
    """Fill `item.windows` with each window's range, CoT and feature keys (seeds come at synthesis).

    Keeps the generation each window last drew its noise at, so a rerun of the stage does not undo a
    local regeneration.
    """
    plan = item_plan(item, settings)
    previous = {w["index"]: w for w in item.windows}
    has_text = bool(item.caption or item.caption_cot or item.window_cots)
    windows = []
    for w in plan.windows:
        start, end = plan.window_range_sec(w.index)
        end = min(end, item.duration_sec)
        cot = _cot_for(start, end, item.window_cots) if item.window_cots else item.caption_cot
        windows.append(
            {
                "index": w.index,
                "start_sec": round(start, 4),
                "end_sec": round(end, 4),
                "caption_cot": cot,
                "cot_id": stable_hash(item.caption, cot, length=12),
                "video_features_key": video_window_key(item, plan, w.index, settings),
                "text_features_key": text_features_key(item.caption, cot, settings) if has_text else None,
                "generation": previous.get(w.index, {}).get("generation", 0),
                "seed": previous.get(w.index, {}).get("seed"),
            }
        )
    item.windows = windows
    if len(windows) > 1 and item.cot_record is not None:
        # Lineage's cot row carries each window's CoT and time range.
        parsed = dict(item.cot_record.get("parsed") or {})
        parsed["windows"] = [
            {k: w[k] for k in ("index", "start_sec", "end_sec", "cot_id", "caption_cot")} for w in windows
        ]
        item.cot_record = {**item.cot_record, "parsed": parsed}
    item.video_features_key = windows[0]["video_features_key"]
    item.text_features_key = windows[0]["text_features_key"]
    return plan


def redraw_regenerated_windows(item: WorkItem) -> None:
    """On a regeneration, the windows QC found failing draw new noise; all of them when the failure
    was not local to some windows."""
    if item.generation == 0:
        return
    failing = [w for w in item.windows if w.get("failed")]
    for window in failing or item.windows:
        window["generation"] = max(int(window["generation"]), item.generation)
    for window in item.windows:
        window["failed"] = False


def assign_seeds(item: WorkItem, item_seed_of) -> list[int]:
    """Each window's seed: from the item seed of the generation it was last drawn at, and its index."""
    seeds = []
    for window in item.windows:
        seed = window_seed(item_seed_of(window["generation"]), window["index"])
        window["seed"] = seed
        seeds.append(seed)
    return seeds


def windows_summary(item: WorkItem) -> list[dict[str, object]]:
    """What lineage and metrics.json record of each window."""
    keys = (
        "index",
        "start_sec",
        "end_sec",
        "seed",
        "generation",
        "cot_id",
        "video_features_key",
        "text_features_key",
    )
    return [{k: w.get(k) for k in keys} for w in item.windows]
