"""Reprocessing: rerun the failed or rejected sources chosen from lineage, with the settings of the run
that failed each one, and only the overrides the caller names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed, State
from pydantic import ValidationError

from flows.dub import (
    final_state,
    merge_results,
    name_this_run,
    new_run_id,
    run_name,
    run_sources,
    with_input_roots,
)
from tasks.config import PipelineSettings, S3Settings, merge_settings
from tasks.items import WorkItem
from tasks.run_lineage import Lineage, close_lineage, open_lineage
from tasks.score_filter import ScoreFilter, check_where, select_scored
from tasks.sources import MANIFEST_SUFFIXES, ROW_ERROR_PREFIX, resolve_location

# The key under which a reprocessing run records what it reran and what it changed, in runs.params.
REPROCESS_PARAMS_KEY = "reprocess"


class RunSettingsError(ValueError):
    """The settings recorded for a run cannot be read back (lineage from an incompatible version)."""


def _location(source: str, run_input: str | None) -> str:
    """Sources are absolute; a relative one (recorded by an older version, and not found when lineage
    was migrated) is looked for next to the manifest of the run that listed it."""
    if run_input and Path(run_input).suffix.lower() in MANIFEST_SUFFIXES:
        return resolve_location(source, Path(run_input).parent)
    return source


def _row_error(row: dict[str, Any]) -> str | None:
    """A manifest row whose values were unusable stays unusable: only a new manifest changes it."""
    error = row.get("error") or ""
    return error if row.get("stage") == "ingest" and error.startswith(ROW_ERROR_PREFIX) else None


def _source_folders(items: list[WorkItem]) -> tuple[str, ...]:
    """Input roots for runs recorded before roots existed: the folder of each source, and S3."""
    return (*dict.fromkeys(str(Path(i.source).parent) for i in items), "s3://")


def run_settings(run_id: str, home: PipelineSettings, overrides: dict[str, Any] | None) -> PipelineSettings:
    """The settings a recorded run used, in this work directory and lineage, with `overrides` applied."""
    rows = open_lineage(home).execute("SELECT params FROM runs WHERE run_id = ?", [run_id])
    recorded = dict(rows[0]["params"] or {}) if rows else {}
    recorded.pop(REPROCESS_PARAMS_KEY, None)
    # The lineage being read is this one (the work directory's, or the shared one), wherever the failed
    # run was started from.
    recorded.update(workdir=home.workdir, lineage=home.lineage, lineage_data=home.lineage_data)
    try:
        return merge_settings(PipelineSettings.model_validate(recorded), overrides)
    except ValidationError as exc:
        raise RunSettingsError(f"the settings recorded for run {run_id} do not apply: {exc}") from exc


def _used_generations(home: PipelineSettings, item_ids: list[str]) -> dict[str, int]:
    """The highest generation each item was ever synthesised with, across runs."""
    rows = open_lineage(home).execute(
        "SELECT item_id, max(CAST(json_extract_string(params, '$.generation') AS INTEGER)) AS generation "
        "FROM stage_attempts WHERE stage = 'synthesis' AND list_contains(?::VARCHAR[], item_id) "
        "GROUP BY item_id",
        [item_ids],
    )
    return {r["item_id"]: r["generation"] for r in rows if r["generation"] is not None}


def _work_items(
    home: PipelineSettings, lin: Lineage, rows: list[dict[str, Any]], generation: Callable[[dict[str, Any], dict[str, int]], int]
) -> list[tuple[str, WorkItem]]:
    """Selected lineage rows as fresh work items, each with the run whose outcome it is; `generation`
    picks a row's generation from the highest one each item has used."""
    inputs = {r["run_id"]: r["input"] for r in lin.execute("SELECT run_id, input FROM runs")}
    used = _used_generations(home, [r["item_id"] for r in rows if r.get("item_id")])
    return [
        (
            row["run_id"],
            WorkItem(
                source=row["source"],
                source_display=row.get("source_display"),
                segment=row.get("segment") or "",
                row_error=_row_error(row),
                location=_location(row["source"], inputs.get(row["run_id"])),
                position=n,
                manifest_id=row.get("manifest_id"),
                provided_caption=row.get("caption"),
                provided_cot=row.get("caption_cot"),
                start_sec=row.get("start_sec") or 0.0,
                requested_duration_sec=row.get("requested_duration_sec"),
                generation=generation(row, used),
            ),
        )
        for n, row in enumerate(rows)
    ]


def select_failed(
    home: PipelineSettings,
    *,
    from_run: str | None = None,
    stage: str | None = None,
    error_contains: str | None = None,
    include_rejected: bool = True,
) -> list[tuple[str, WorkItem]]:
    """Failed (and rejected) sources whose latest state matches the filters, as fresh work items, each
    with the run whose outcome it is."""
    statuses = ("failed", "rejected") if include_rejected else ("failed",)
    lin = open_lineage(home)
    rows = lin.select_for_reprocess(run_id=from_run, stage=stage, error_contains=error_contains, statuses=statuses)

    def generation(row: dict[str, Any], used: dict[str, int]) -> int:
        # A rejected item reruns with seeds none of its earlier generations used.
        return used[row["item_id"]] + 1 if row["status"] == "rejected" and row["item_id"] in used else 0

    return _work_items(home, lin, rows, generation)


def select_by_scores(
    home: PipelineSettings, where: ScoreFilter, *, from_run: str | None = None
) -> list[tuple[str, WorkItem]]:
    """Published or rejected sources whose latest listening scores match ``where``, each with the run
    whose outcome it is.

    They restart at a generation none of their earlier draws used, so they get new seeds (and a new
    result key) and go through synthesis and the qc stage again.
    """
    lin = open_lineage(home)
    rows = select_scored(lin, where, run_id=from_run)
    return _work_items(home, lin, rows, lambda row, used: used.get(row["item_id"], -1) + 1)


def describe_filter(
    from_run: str | None, stage: str | None, error_contains: str | None, where: str | None = None
) -> str:
    parts = [f"from_run={from_run}" if from_run else "", f"stage={stage}" if stage else "",
             f"error~{error_contains!r}" if error_contains else "", f"where {where!r}" if where else ""]
    return "reprocess(" + ", ".join(p for p in parts if p) + ")"


def _reprocess_run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters
    return run_name(
        params.get("run_id"),
        describe_filter(
            params.get("from_run"), params.get("stage"), params.get("error_contains"), params.get("where")
        ),
    )


@flow(name="reprocess_failed", flow_run_name=_reprocess_run_name, log_prints=True)
def reprocess_failed(
    workdir: str,
    overrides: dict[str, Any] | None = None,
    from_run: str | None = None,
    stage: str | None = None,
    error_contains: str | None = None,
    include_rejected: bool = True,
    run_id: str | None = None,
    fail_on_errors: bool = False,
    where: str | None = None,
    lineage: str | None = None,
    lineage_data: str | None = None,
) -> State:
    """Rerun failed/rejected sources with the settings of the run that failed each one, plus `overrides`
    (partial settings, merged field by field, recorded in the new run's params). With ``where`` (stage
    qc), rerun instead the published or rejected sources whose latest listening scores match it: they
    draw new candidates from synthesis on.

    Finished stages are content-addressed, so each item effectively restarts at the stage that failed:
    its cached CoT and features are reused. The run ends as `dub_dataset` does (see `final_state`).
    `lineage`/`lineage_data` name a shared lineage (see `PipelineSettings`) instead of the workdir's file.
    """
    # Where the S3 server is (for a lineage data path on S3) comes with the overrides, as for the store.
    home = PipelineSettings(
        workdir=str(Path(workdir).expanduser().resolve()), lineage=lineage, lineage_data=lineage_data,
        s3=S3Settings.model_validate((overrides or {}).get("s3") or {}),
    )
    if where is not None:
        selected = select_by_scores(home, check_where(where, stage), from_run=from_run)
    else:
        selected = select_failed(
            home, from_run=from_run, stage=stage, error_contains=error_contains, include_rejected=include_rejected
        )
    label = describe_filter(from_run, stage, error_contains, where)
    if not selected:
        get_run_logger().info("nothing to reprocess")
        close_lineage(home)
        nothing = {"run_id": None, "run_ids": [], "counts": {}, "cached": 0, "stage_seconds": {}, "items": []}
        return Completed(message="nothing to reprocess", data=nothing)
    # Items whose runs used the same settings rerun together, as one lineage run per settings.
    groups: dict[str, tuple[PipelineSettings, list[str], list[WorkItem]]] = {}
    for failed_run, item in selected:
        settings = run_settings(failed_run, home, overrides)
        key = settings.model_dump_json()
        group = groups.setdefault(key, (settings, [], []))
        if failed_run not in group[1]:
            group[1].append(failed_run)
        group[2].append(item)
    if run_id is None:
        run_id = new_run_id()
        name_this_run(run_id, label)
    results = []
    for n, (settings, failed_runs, items) in enumerate(groups.values()):
        for position, item in enumerate(items):
            item.position = position
        settings = with_input_roots(settings, _source_folders(items))
        results.append(
            run_sources(
                items,
                settings,
                run_id=run_id if n == 0 else f"{run_id}-{n + 1}",
                input_label=label,
                extra_params={REPROCESS_PARAMS_KEY: {"of_runs": failed_runs, "overrides": overrides or {}}},
            )
        )
    return final_state(merge_results(results), fail_on_errors=fail_on_errors)
