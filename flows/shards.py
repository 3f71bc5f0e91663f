"""Fan a dataset run out over a Prefect work pool: disjoint shards, each one run of the shard deployment.

Every worker of the pool (one per GPU or machine) takes shards; all of them write the one shared
(DuckLake) lineage, which is why sharding needs it. The parent waits for its shards and writes one
summary, from lineage.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from tasks.config import PipelineSettings
from tasks.items import WorkItem
from tasks.run_lineage import close_lineage, open_lineage

# The deployment each shard runs as (deployments.yaml: the `dub_shard` flow, deployment `dub-shard`).
SHARD_DEPLOYMENT = "dub_shard/dub-shard"
_POLL_S = 2.0


def shard_run_id(run_id: str, index: int, count: int) -> str:
    return f"{run_id}-shard{index + 1}of{count}"


def take_shard(items: list[WorkItem], index: int, count: int) -> list[WorkItem]:
    """The items of shard `index` of `count`: every count-th source, so shards are disjoint and even."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is outside 0..{count - 1}")
    return [item for item in items if item.position % count == index]


def fan_out(
    input: str, settings: PipelineSettings, *, run_id: str, shards: int, deployment: str = SHARD_DEPLOYMENT
) -> dict[str, object]:
    """Submit `shards` runs of `deployment`, wait for all of them, and summarise them from lineage."""
    if settings.lineage is None:
        raise ValueError(
            "shards > 1 needs a shared lineage (settings.lineage = 'ducklake:postgres:...'): every shard "
            "writes it from its own worker"
        )
    logger = get_run_logger()
    settings_json = settings.model_dump(mode="json")
    submitted = [
        run_deployment(
            name=deployment,
            parameters={"input": input, "settings": settings_json, "shard_index": k, "shard_count": shards,
                        "run_id": shard_run_id(run_id, k, shards)},
            timeout=0,
        )
        for k in range(shards)
    ]
    logger.info("submitted %d shards of %s to %s", shards, input, deployment)
    states = _wait([run.id for run in submitted])
    return _summary(settings, run_id, shards, states)


def _wait(flow_run_ids: list[UUID]) -> dict[UUID, Any]:
    """The final state of each flow run (as long as the runs take: the pool decides when they start)."""
    final: dict[UUID, Any] = {}
    with get_client(sync_client=True) as client:
        while len(final) < len(flow_run_ids):
            for flow_run_id in flow_run_ids:
                if flow_run_id in final:
                    continue
                state = client.read_flow_run(flow_run_id).state
                if state is not None and state.is_final():
                    final[flow_run_id] = state
            if len(final) < len(flow_run_ids):
                time.sleep(_POLL_S)
    return final


def _summary(settings: PipelineSettings, run_id: str, shards: int, states: dict[UUID, Any]) -> dict[str, object]:
    run_ids = [shard_run_id(run_id, k, shards) for k in range(shards)]
    rows = [row for rid in run_ids for row in open_lineage(settings).run_summary(rid)]
    close_lineage(settings)
    counts: Counter[str] = Counter()
    for row in rows:
        counts.update(succeeded=row["n_succeeded"], failed=row["n_failed"], rejected=row["n_rejected"])
    missing = sorted(set(run_ids) - {row["run_id"] for row in rows})
    table = [
        {"shard run": row["run_id"], "status": row["status"], "succeeded": row["n_succeeded"],
         "failed": row["n_failed"], "rejected": row["n_rejected"], "cached": row["n_items_fully_cached"]}
        for row in rows
    ] + [{"shard run": rid, "status": "never started", "succeeded": 0, "failed": 0, "rejected": 0, "cached": 0}
         for rid in missing]
    create_table_artifact(table, key=f"dubbing-{run_id}-shards".lower(), description=f"Dubbing run {run_id}: shards")
    unfinished = missing + [row["run_id"] for row in rows if row["status"] != "completed"]
    if unfinished:
        states_seen = sorted({str(state.name) for state in states.values()})
        raise RuntimeError(
            f"{len(unfinished)} of {shards} shards did not finish ({', '.join(unfinished)}; flow run states "
            f"{states_seen}): rerun the dataset, finished items are reused"
        )
    return {
        "run_id": run_id,
        "run_ids": run_ids,
        "counts": {k: v for k, v in counts.items() if v},
        "cached": sum(row["n_items_fully_cached"] for row in rows),
        "stage_seconds": {},
        "items": [],
    }
