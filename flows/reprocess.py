"""Reprocessing: rerun the failed or rejected sources chosen from lineage."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.dub import _run_name, new_run_id, run_sources
from tasks import runtime
from tasks.config import PipelineSettings
from tasks.ingest import MANIFEST_SUFFIXES, resolve_location
from tasks.items import WorkItem


def _location(source: str, run_id: str | None, settings: PipelineSettings) -> str:
    """Relative manifest entries are found again next to the manifest of the run that listed them."""
    rows = runtime.lineage(settings).execute("SELECT input FROM runs WHERE run_id = ?", [run_id])
    run_input = Path(rows[0]["input"]) if rows and rows[0]["input"] else None
    if run_input is not None and run_input.suffix.lower() in MANIFEST_SUFFIXES:
        return resolve_location(source, run_input.parent)
    return source


def select_failed(
    settings: PipelineSettings,
    *,
    from_run: str | None = None,
    stage: str | None = None,
    error_contains: str | None = None,
    include_rejected: bool = True,
) -> list[WorkItem]:
    """Failed (and rejected) sources whose latest state matches the filters, as fresh work items."""
    statuses = ("failed", "rejected") if include_rejected else ("failed",)
    rows = runtime.lineage(settings).select_for_reprocess(
        run_id=from_run, stage=stage, error_contains=error_contains, statuses=statuses
    )
    # A rejected item reruns with seeds none of its earlier generations used.
    fresh_generation = settings.quality.max_regenerations + 1
    return [
        WorkItem(
            source=row["source"],
            location=_location(row["source"], row.get("run_id"), settings),
            position=n,
            manifest_id=row.get("manifest_id"),
            provided_caption=row.get("caption"),
            provided_cot=row.get("caption_cot"),
            start_sec=row.get("start_sec") or 0.0,
            requested_duration_sec=row.get("requested_duration_sec"),
            generation=fresh_generation if row.get("status") == "rejected" else 0,
        )
        for n, row in enumerate(rows)
    ]


@flow(name="reprocess_failed", flow_run_name=_run_name, log_prints=True)
def reprocess_failed(
    settings: PipelineSettings,
    from_run: str | None = None,
    stage: str | None = None,
    error_contains: str | None = None,
    include_rejected: bool = True,
    run_id: str | None = None,
) -> dict[str, object]:
    """Rerun failed/rejected sources. Finished stages are content-addressed, so each item effectively
    restarts at the stage that failed: its cached CoT and features are reused."""
    items = select_failed(
        settings, from_run=from_run, stage=stage, error_contains=error_contains, include_rejected=include_rejected
    )
    run_id = run_id or new_run_id()
    if not items:
        get_run_logger().info("nothing to reprocess")
        return {"run_id": None, "counts": {}, "cached": 0, "stage_seconds": {}, "items": []}
    return run_sources(items, settings, run_id=run_id, input_label=f"reprocess(from_run={from_run}, stage={stage})")
