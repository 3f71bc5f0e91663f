"""CoT stage: the caption and chain-of-thought text of each item, from vLLM or from the manifest."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict

from cot_prompts import CotRequest, CotResult, ProvidedBackend, VllmBackend, cot_cache_key, load_prompt
from storage import Stage
from tasks.config import PipelineSettings
from tasks.executors import Batch, Executor
from tasks.handles import Handles
from tasks.items import WorkItem, batch_share
from tasks.records import LineageRecords, StageResult
from tasks.retry import stage_task
from tasks.window_cot import describe_windows
from tasks.windows import parse_window_cots


def _make_backends(
    handles: Handles, settings: PipelineSettings, prompt
) -> tuple[ProvidedBackend, VllmBackend | None]:
    """The manifest backend and, with a server URL, the MLLM one.

    T5 tokens are counted with the run's own T5 tokenizer, loaded only when a count is needed.
    """

    def count(text: str) -> int:
        return handles.extractor(settings).count_t5_tokens(text)

    provided = ProvidedBackend(count_t5_tokens=count, prompt=prompt)
    if not settings.cot.url:
        return provided, None
    mllm = VllmBackend(
        base_url=settings.cot.url,
        model=settings.cot.model,
        prompt=prompt,
        count_t5_tokens=count,
        max_concurrency=settings.cot.max_concurrency,
        timeout_s=settings.cot.timeout_s,
        max_retries=settings.cot.max_retries,
        video_mode=settings.cot.video_mode,
    )
    return provided, mllm


def _apply(item: WorkItem, result: CotResult) -> None:
    item.cot_record = dataclasses.asdict(result)
    if result.error:
        item.fail(Stage.COT, result.error)
        return
    item.caption = result.caption
    item.caption_cot = result.caption_cot
    item.cot_backend = result.backend
    item.t5_tokens = result.t5_tokens
    item.next_stage = Stage.FEATURES


def _request(item: WorkItem, caption_cot: str | None = None) -> CotRequest:
    # With per-window CoTs the whole video's CoT comes from its caption alone (template or none).
    whole_cot = None if item.window_cots else item.provided_cot
    return CotRequest(
        item_id=item.item_id,
        video_path=item.local_path,
        duration_sec=item.duration_sec,
        caption=item.provided_caption,
        caption_cot=caption_cot if caption_cot is not None else whole_cot,
        start_sec=item.start_sec,
    )


def _fit_window_cots(item: WorkItem, provided: ProvidedBackend) -> None:
    """Each window CoT goes through the same T5 budget as a whole-video one."""
    fitted = []
    for entry in item.window_cots or []:
        result = provided.describe(_request(item, caption_cot=str(entry["cot"])))
        if result.error:
            item.fail(Stage.COT, f"window CoT [{entry['start']}, {entry['end']}] s: {result.error}")
            return
        fitted.append({**entry, "cot": result.caption_cot})
    item.window_cots = fitted or None


def run_cot(handles: Handles, batch: Batch) -> StageResult:
    """Give each pending item its caption and CoT; results are cached by video, prompt and backend."""
    settings, items = batch.settings, batch.items
    store = handles.store(settings)
    records = LineageRecords(batch.run_id)
    prompt = load_prompt(settings.cot.prompt_version)
    provided, mllm = _make_backends(handles, settings, prompt)

    def backend_for(item: WorkItem):
        # A CoT the user wrote (manifest or demo) is used as is; the MLLM writes the missing ones.
        return mllm if mllm is not None and not item.provided_cot else provided

    backends = {b.identity: b for b in (provided, mllm) if b is not None}
    missing: dict[str, list[WorkItem]] = defaultdict(list)
    for item in (i for i in items if i.is_pending):
        try:
            item.window_cots = parse_window_cots(item.provided_cot)
        except ValueError as exc:
            item.fail(Stage.COT, str(exc))
            continue
        backend = backend_for(item)
        item.cot_key = cot_cache_key(_request(item), backend.identity, prompt.hash)
        key = f"cot/{item.cot_key}.json"
        if store.exists(key):
            _apply(item, CotResult(**json.loads(store.get_bytes(key))))
            _book(records, item, "cached", prompt, time.time(), time.time())
        else:
            missing[backend.identity].append(item)
    for identity, group in missing.items():
        started = time.time()
        results = backends[identity].generate([_request(i) for i in group])
        finished = time.time()
        for n, (item, result) in enumerate(zip(group, results, strict=True)):
            _apply(item, result)
            if result.error is None:
                store.put_bytes(
                    f"cot/{item.cot_key}.json",
                    json.dumps(dataclasses.asdict(result), default=str).encode(),
                    content_type="application/json",
                )
            _book(records, item, None, prompt, *batch_share(started, finished, n, len(group)))
    if mllm is not None:
        describe_windows(items, settings, mllm, store, prompt.hash)
    for item in items:
        if item.is_pending and item.window_cots:
            _fit_window_cots(item, provided)
    return StageResult(items, records)


@stage_task("cot")
def write_cot(batch_id: str, batch: Batch, executor: Executor) -> StageResult:
    """The CoT stage over a batch (a CPU stage: it waits on the vLLM server)."""
    return executor.run(run_cot, batch, models=False)


def _book(
    records: LineageRecords, item: WorkItem, status: str | None, prompt, started: float, finished: float
) -> None:
    record = item.cot_record or {}
    records.attempt(
        Stage.COT,
        item,
        status=status or ("failed" if item.status == "failed" else "succeeded"),
        input_hash=item.cot_key,
        params={"backend": record.get("backend"), "retries": record.get("retries")},
        model_version=record.get("model"),
        prompt_version=f"{prompt.version}:{prompt.hash[:12]}",
        started_at=started,
        finished_at=finished,
        error=item.error if item.failed_at == Stage.COT else None,
        details={"t5_tokens": record.get("t5_tokens"), "latency_s": record.get("latency_s")},
    )
