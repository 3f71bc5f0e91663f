"""The dubbing flows: a whole dataset (`dub_dataset`) or one video (`dub_video`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from cot_prompts import VllmServer
from cot_prompts.server import CPU_SERVER_ARGS, CPU_SERVER_ENV
from flows.pipeline import process_items
from flows.report import publish_report, publish_summary
from tasks import preflight, runtime
from tasks.config import PipelineSettings
from tasks.ingest import list_sources
from tasks.items import WorkItem, jsonable

PIPELINE_VERSION = "0.1.0"


def new_run_id() -> str:
    return f"run-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def _run_name() -> str:
    """Flow run names carry the lineage run id, or what the run is about when that is not chosen yet."""
    params = flow_run.parameters
    label = params.get("run_id") or Path(str(params.get("input") or params.get("video") or "reprocess")).name
    return f"{flow_run.flow_name}-{label}"


@contextlib.contextmanager
def cot_server(settings: PipelineSettings) -> Iterator[PipelineSettings]:
    """Start a local vLLM server for this run when asked to and no URL was given."""
    if settings.cot.url or not settings.cot.start_server:
        yield settings
        return
    log = settings.workdir_path / "logs" / "vllm-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    on_cpu = settings.device == "cpu"
    with VllmServer(
        model=settings.cot.model,
        python=Path(settings.cot.server_python),
        log_path=log,
        extra_args=CPU_SERVER_ARGS if on_cpu else (),
        env=CPU_SERVER_ENV if on_cpu else None,
    ) as server:
        cot = settings.cot.model_copy(update={"url": server.base_url})
        yield settings.model_copy(update={"cot": cot})


def run_sources(
    items: list[WorkItem],
    settings: PipelineSettings,
    *,
    run_id: str,
    input_label: str,
) -> dict[str, object]:
    """Run the pipeline over the items as one lineage run; returns a small summary."""
    logger = get_run_logger()
    settings = preflight.require(settings)  # a worker checks its models before it records the run
    lin = runtime.lineage(settings)
    lin.start_run(
        run_id,
        input=input_label,
        params=settings.model_dump(mode="json"),
        prefect_flow_run_id=str(flow_run.id) if flow_run.id else None,
        code_version=PIPELINE_VERSION,
    )
    if settings.preset == "tiny":
        logger.warning(runtime.RANDOM_WEIGHTS_WARNING)
    try:
        with cot_server(settings) as active:
            done, stage_seconds = process_items(items, active, run_id)
    except BaseException:
        lin.finish_run(run_id, "crashed")
        runtime.close_lineage(settings)
        raise
    lin.finish_run(run_id, "completed")
    # DuckDB admits one writing process per file: release it as soon as the run is over, so that
    # `thinksound status` or the next run can open it while this (warm) worker process lives on.
    runtime.close_lineage(settings)
    publish_summary(run_id, done, stage_seconds)
    publish_report(run_id, done, settings.preset)
    counts = Counter(i.status for i in done)
    logger.info("run %s finished: %s", run_id, dict(counts))
    return {
        "run_id": run_id,
        "counts": dict(counts),
        "cached": sum(1 for i in done if i.cached),
        "stage_seconds": stage_seconds,
        "items": [
            {"source": i.source, "status": i.status, "error": i.error, "audio_uri": i.audio_uri,
             "video_uri": i.video_uri, "metrics_uri": i.metrics_uri, "item_id": i.item_id, "stage": i.stage,
             "caption": i.caption, "caption_cot": i.caption_cot, "cot_backend": i.cot_backend,
             "cached": i.cached, "metrics": jsonable(i.metrics)}
            for i in done
        ],
    }


@flow(name="dub_dataset", flow_run_name=_run_name, log_prints=True)
def dub_dataset(input: str, settings: PipelineSettings, run_id: str | None = None) -> dict[str, object]:
    """Dub every video of a directory or manifest (CSV/Parquet), recording lineage as it goes."""
    run_id = run_id or new_run_id()
    return run_sources(list_sources(input), settings, run_id=run_id, input_label=input)


@flow(name="dub_video", flow_run_name=_run_name, log_prints=True)
def dub_video(
    video: str,
    settings: PipelineSettings,
    caption: str | None = None,
    caption_cot: str | None = None,
    run_id: str | None = None,
) -> dict[str, object]:
    """Dub a single video; the result is an item in lineage like any dataset item."""
    run_id = run_id or new_run_id()
    item = WorkItem(source=video, position=0, provided_caption=caption or None, provided_cot=caption_cot or None)
    return run_sources([item], settings, run_id=run_id, input_label=video)
