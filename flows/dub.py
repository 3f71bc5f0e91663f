"""The dubbing flows: a whole dataset (`dub_dataset`) or one video (`dub_video`)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter, UserList
from pathlib import Path
from typing import Any

from prefect import flow, get_client, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from flows.pipeline import process_items
from flows.reasons import stop_reason
from flows.report import publish_report, publish_summary
from flows.shards import SHARD_DEPLOYMENT, fan_out, take_shard
from tasks import preflight
from tasks.config import PipelineSettings, merge_settings
from tasks.cot_server import cot_server
from tasks.handles import RANDOM_WEIGHTS_WARNING, quiet_progress_bars
from tasks.items import WorkItem, jsonable
from tasks.quality import candidate_summary
from tasks.run_lineage import close_lineage, open_lineage
from tasks.scratch import own_scratch
from tasks.sources import default_roots, list_sources, video_item

PIPELINE_VERSION = "0.1.0"


def new_run_id() -> str:
    return f"run-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def with_input_roots(settings: PipelineSettings, defaults: tuple[str, ...]) -> PipelineSettings:
    """The roots a run admits inputs from: those given, or the defaults; recorded with the run's params."""
    return settings if settings.input_roots else settings.model_copy(update={"input_roots": defaults})


def run_name(run_id: str | None, label: str) -> str:
    """A flow run's name: the lineage run id (once chosen) and what the run works on."""
    return f"{run_id} {label}" if run_id else label


def _input_label(input: str) -> str:
    return Path(input).name or input


def _dataset_run_name() -> str:
    params = flow_run.parameters
    return run_name(params.get("run_id"), _input_label(str(params.get("input"))))


def _video_run_name() -> str:
    params = flow_run.parameters
    return run_name(params.get("run_id"), params.get("display_name") or _input_label(str(params.get("video"))))


def name_this_run(run_id: str, label: str) -> None:
    """Rename the flow run once its run id is chosen inside it (deployments start without one)."""
    if flow_run.id is None:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, name=run_name(run_id, label))


class RunFailed(RuntimeError):
    """A flow run ended Failed (no item succeeded, or a failure with `fail_on_errors`); `result` has
    its summary, as a completed run returns it."""

    def __init__(self, message: str, result: dict[str, object]) -> None:
        super().__init__(message)
        self.result = result


def counts_message(counts: dict[str, int]) -> str:
    """'3 succeeded, 1 failed': the flow run's state message."""
    order = ("succeeded", "failed", "rejected")
    named = [f"{counts[s]} {s}" for s in order if counts.get(s)]
    named += [f"{n} {s}" for s, n in sorted(counts.items()) if s not in order and n]
    return ", ".join(named) or "no items"


def final_state(result: dict[str, object], *, fail_on_errors: bool) -> State:
    """Completed with the counts, or Failed when every item failed (or any did, with `fail_on_errors`)."""
    counts: dict[str, int] = result["counts"]
    total, succeeded = sum(counts.values()), counts.get("succeeded", 0)
    message = counts_message(counts)
    if total and (succeeded == 0 or (fail_on_errors and succeeded < total)):
        return Failed(message=message, data=RunFailed(message, result))
    return Completed(message=message, data=result)


class ItemSummaries(UserList):
    """The per-item part of a run's summary: a list of dicts to its readers.

    Deliberately not a `list`: Prefect walks a flow's return value for futures, down to every field of
    every item, which cost the driver ~0.13 ms per item; it does not walk into a `UserList`.
    """


def merge_results(results: list[dict[str, object]]) -> dict[str, object]:
    """One summary for several lineage runs made by one flow run (reprocessing groups by settings)."""
    counts: Counter[str] = Counter()
    stage_seconds: Counter[str] = Counter()
    for result in results:
        counts.update(result["counts"])
        stage_seconds.update(result["stage_seconds"])
    return {
        "run_id": results[0]["run_id"],
        "run_ids": [r["run_id"] for r in results],
        "counts": dict(counts),
        "cached": sum(r["cached"] for r in results),
        "stage_seconds": dict(stage_seconds),
        "items": ItemSummaries(item for r in results for item in r["items"]),
    }


# The fields of a state row that identify it and say where it stands (a source may be segmented).
_STATE_FIELDS = ("source", "segment", "item_id", "status", "stage")


def _record_stop(lin, run_id: str, exc: BaseException) -> None:
    """The items an error stopped (an S3 outage, a full disk, SIGTERM) record why, so lineage says more
    than "crashed"; they stay unfinished, so an earlier outcome of the same source still shows."""
    try:
        unfinished = [r for r in lin.run_states(run_id) if r["status"] not in ("succeeded", "failed", "rejected")]
        lin.set_item_states(
            run_id,
            [{**{k: r[k] for k in _STATE_FIELDS if k in r}, "error": stop_reason(exc, r["stage"])} for r in unfinished],
        )
    except Exception:  # the lineage itself may be what failed (a full disk): the original error matters
        get_run_logger().warning("could not record why run %s stopped", run_id, exc_info=True)


def run_sources(
    items: list[WorkItem],
    settings: PipelineSettings,
    *,
    run_id: str,
    input_label: str,
    extra_params: dict[str, object] | None = None,
) -> dict[str, object]:
    """Run the pipeline over the items as one lineage run; returns a small summary.

    `extra_params` are recorded with the settings in the run's params (what a reprocessing run reran).
    """
    logger = get_run_logger()
    settings = preflight.require(settings)  # a worker checks its models before it records the run
    lin = open_lineage(settings)
    lin.start_run(
        run_id,
        input=input_label,
        params={**settings.model_dump(mode="json"), **(extra_params or {})},
        prefect_flow_run_id=str(flow_run.id) if flow_run.id else None,
        code_version=PIPELINE_VERSION,
    )
    if settings.preset == "tiny":
        logger.warning(RANDOM_WEIGHTS_WARNING)
    own_scratch(settings.scratch_dir)  # claims this process's scratch, removing what killed runs left
    try:
        with cot_server(settings) as active, quiet_progress_bars():
            done, stage_seconds = process_items(items, active, run_id, lin)
    except BaseException as exc:
        _record_stop(lin, run_id, exc)
        lin.finish_run(run_id, "crashed")
        close_lineage(settings)
        raise
    lin.finish_run(run_id, "completed")
    # DuckDB admits one writing process per file: release it as soon as the run is over, so that
    # `thinksound status` or the next run can open it while this (warm) worker process lives on.
    close_lineage(settings)
    publish_summary(run_id, done, stage_seconds)
    publish_report(run_id, done, settings)
    counts = Counter(i.status for i in done)
    for item in done:
        if item.status in ("failed", "rejected"):
            logger.warning("%s at %s: %s: %s", item.status, item.failed_at, item.source, item.error)
    logger.info("run %s finished: %s", run_id, counts_message(counts))
    return {
        "run_id": run_id,
        "counts": dict(counts),
        "cached": sum(1 for i in done if i.cached),
        "stage_seconds": stage_seconds,
        "items": ItemSummaries(
            {"source": i.source, "source_display": i.source_display, "segment": i.segment,
             "start_sec": i.start_sec, "duration_sec": i.duration_sec, "status": i.status, "error": i.error,
             "audio_uri": i.audio_uri,
             "video_uri": i.video_uri, "metrics_uri": i.metrics_uri, "item_id": i.item_id, "stage": i.lineage_stage,
             "caption": i.caption, "caption_cot": i.caption_cot, "cot_backend": i.cot_backend,
             "cached": i.cached, "metrics": jsonable(i.metrics), "scores": jsonable(i.scores), "seed": i.seed,
             "candidates": jsonable([candidate_summary(c) for c in i.candidates if "reasons" in c])}
            for i in done
        ),
    }


@flow(name="dub_dataset", flow_run_name=_dataset_run_name, log_prints=True)
def dub_dataset(
    input: str,
    settings: PipelineSettings,
    run_id: str | None = None,
    overrides: dict[str, Any] | None = None,
    fail_on_errors: bool = False,
    shards: int = 1,
    shard_deployment: str = SHARD_DEPLOYMENT,
) -> State:
    """Dub every video of a directory or manifest (CSV/Parquet), recording lineage as it goes.

    `overrides` are partial settings merged field by field over `settings` (a deployment's `settings`
    stay whole when a run changes a few fields). The run ends Failed when no item succeeded, or when
    any item failed and `fail_on_errors` is set.

    With `shards` > 1 and a shared lineage, the input is split into disjoint shards, each submitted as a
    run of `shard_deployment` (`dub_shard`) on its work pool; this run waits for them and sums them up.
    """
    settings = with_input_roots(merge_settings(settings, overrides), default_roots(input))
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    if run_id is None:
        run_id = new_run_id()
        name_this_run(run_id, _input_label(input))
    if shards > 1:
        result = fan_out(input, settings, run_id=run_id, shards=shards, deployment=shard_deployment)
    else:
        result = run_sources(list_sources(input), settings, run_id=run_id, input_label=input)
    return final_state(result, fail_on_errors=fail_on_errors)


@flow(name="dub_shard", flow_run_name=_dataset_run_name, log_prints=True)
def dub_shard(
    input: str, settings: PipelineSettings, shard_index: int, shard_count: int, run_id: str
) -> State:
    """One shard of a fanned-out `dub_dataset`: every `shard_count`-th source of the input, from
    `shard_index`, as its own lineage run (in the shared lineage)."""
    items = take_shard(list_sources(input), shard_index, shard_count)
    label = f"{input} [shard {shard_index + 1}/{shard_count}]"
    return final_state(run_sources(items, settings, run_id=run_id, input_label=label), fail_on_errors=False)


@flow(name="dub_video", flow_run_name=_video_run_name, log_prints=True)
def dub_video(
    video: str,
    settings: PipelineSettings,
    caption: str | None = None,
    caption_cot: str | None = None,
    run_id: str | None = None,
    display_name: str | None = None,
) -> State:
    """Dub a single video; the result is an item in lineage like any dataset item.

    `display_name` names the flow run (the demo passes the upload's file name).
    """
    if run_id is None:
        run_id = new_run_id()
        name_this_run(run_id, display_name or _input_label(video))
    item = video_item(video, caption=caption or None, caption_cot=caption_cot or None)
    settings = with_input_roots(settings, default_roots(video))
    return final_state(run_sources([item], settings, run_id=run_id, input_label=video), fail_on_errors=False)
