"""Where each source stands, written to lineage as batches settle (bookkeeping, not a stage)."""

from __future__ import annotations

import dataclasses

from storage import CotRecord, Lineage
from tasks.items import WorkItem

_COT_COLUMNS = {f.name for f in dataclasses.fields(CotRecord)}


def state_row(item: WorkItem) -> dict[str, object]:
    return dict(
        source=item.source, segment=item.segment, item_id=item.item_id, status=item.status, stage=item.stage,
        error=item.error,
    )


def record_states(lin: Lineage, run_id: str, items: list[WorkItem]) -> None:
    lin.set_item_states(run_id, [state_row(i) for i in items])


def record_outcomes(lin: Lineage, run_id: str, items: list[WorkItem]) -> None:
    """Each source's state, and one CoT row per source (duplicates included), so every source shows
    the text it was dubbed with."""
    record_states(lin, run_id, items)
    records = [
        CotRecord(
            **{
                **{k: v for k, v in item.cot_record.items() if k in _COT_COLUMNS},
                "run_id": run_id,
                "item_id": item.item_id,
                "source": item.source,
                "segment": item.segment,
            }
        )
        for item in items
        if item.cot_record is not None
    ]
    if records:
        lin.record_cots(records)
