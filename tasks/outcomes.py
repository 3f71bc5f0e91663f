"""Where each source stands, written to lineage as batches settle (bookkeeping, not a stage)."""

from __future__ import annotations

import dataclasses

from storage import CotRecord
from tasks.items import WorkItem
from tasks.records import LineageRecords

_COT_COLUMNS = {f.name for f in dataclasses.fields(CotRecord)}


def state_row(item: WorkItem) -> dict[str, object]:
    return dict(
        source=item.source, segment=item.segment, item_id=item.item_id, status=item.status, stage=item.stage,
        error=item.error,
    )


def outcome_records(run_id: str, items: list[WorkItem]) -> LineageRecords:
    """Each source's state, and one CoT row per source (duplicates included), so every source shows
    the text it was dubbed with."""
    records = LineageRecords(run_id)
    records.states = [state_row(i) for i in items]
    records.cots = [
        CotRecord(
            **{
                **{k: v for k, v in item.cot_record.items() if k in _COT_COLUMNS},
                "run_id": run_id,
                "item_id": item.item_id,
                "source": item.source,
            }
        )
        for item in items
        if item.cot_record is not None
    ]
    return records
