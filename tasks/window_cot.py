"""Per-window CoTs from the MLLM: each window of a long video described from its own frames, with the
whole video's caption as context, so the windows tell one consistent story."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from cot_prompts import CotRequest, CotResult, VllmBackend, cot_cache_key
from storage import Stage
from tasks.config import PipelineSettings
from tasks.items import WorkItem
from tasks.windows import item_plan


def _window_requests(item: WorkItem, settings: PipelineSettings) -> list[tuple[CotRequest, float, float]]:
    plan = item_plan(item, settings)
    if plan.single:
        return []
    requests = []
    for window in plan.windows:
        start, end = plan.window_range_sec(window.index)
        end = min(end, item.duration_sec)
        request = CotRequest(
            item_id=f"{item.item_id}-w{window.index}",
            video_path=Path(item.local_path),
            duration_sec=end - start,
            # The whole video's caption, from its own CoT, is the context every window is described in.
            caption=item.caption or None,
            start_sec=item.start_sec + start,
        )
        requests.append((request, start, end))
    return requests


def describe_windows(
    items: list[WorkItem], settings: PipelineSettings, mllm: VllmBackend, store, prompt_hash: str
) -> None:
    """Give every pending long item without user-written CoTs one MLLM CoT per window (cached like
    whole-video CoTs); a window the MLLM cannot describe fails its item."""
    jobs = []  # (item, request, start, end, cache key)
    for item in items:
        if not item.is_pending or item.provided_cot or item.window_cots:
            continue
        for request, start, end in _window_requests(item, settings):
            key = f"cot/{cot_cache_key(request, mllm.identity, prompt_hash)}.json"
            jobs.append((item, request, start, end, key))
    results: dict[str, CotResult] = {}
    for _, _, _, _, key in jobs:
        if store.exists(key):
            results[key] = CotResult(**json.loads(store.get_bytes(key)))
    todo = [job for job in jobs if job[4] not in results]
    for job, result in zip(todo, mllm.generate([job[1] for job in todo]), strict=True):
        results[job[4]] = result
        if result.error is None:
            blob = json.dumps(dataclasses.asdict(result), default=str).encode()
            store.put_bytes(job[4], blob, content_type="application/json")
    by_item: dict[int, list[dict[str, object]]] = {}
    for item, _, start, end, key in jobs:
        result = results[key]
        if result.error is not None:
            item.fail(Stage.COT, f"window at {start:.2f}-{end:.2f} s: {result.error}")
            continue
        by_item.setdefault(id(item), []).append({"start": start, "end": end, "cot": result.caption_cot})
    for item, _, _, _, _ in jobs:
        if item.is_pending:
            item.window_cots = by_item[id(item)]
