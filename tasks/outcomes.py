"""Where each source stands, written to lineage as batches settle (bookkeeping, not a stage)."""

from __future__ import annotations

import dataclasses

from storage import CotRecord
from tasks.items import WorkItem
from tasks.records import LineageRecords

_COT_COLUMNS = {f.name for f in dataclasses.fields(CotRecord)}


def state_row(item: WorkItem) -> dict[str, object]:
    return dict(
        source=item.source, segment=item.segment, item_id=item.item_id, status=item.status, stage=item.lineage_stage,
        error=item.error,
    )


def cot_rows(run_id: str, item: WorkItem) -> list[CotRecord]:
    """The item's CoT as lineage rows: one per window once its windows are laid out (a clip no longer
    than one window has one, window 0), else one for the whole segment."""
    if item.cot_record is None:
        return []
    base = {
        **{k: v for k, v in item.cot_record.items() if k in _COT_COLUMNS},
        "run_id": run_id,
        "item_id": item.item_id,
        "source": item.source,
    }
    if not item.windows:
        return [CotRecord(**base)]
    return [
        CotRecord(
            **{
                **base,
                "caption_cot": w["caption_cot"],
                "window_index": w["index"],
                "window_start_sec": w["start_sec"],
                "window_end_sec": w["end_sec"],
            }
        )
        for w in item.windows
    ]


def outcome_records(run_id: str, items: list[WorkItem]) -> LineageRecords:
    """Each source's state, and its CoT rows (duplicates included), so every source shows the text
    it was dubbed with, window by window."""
    records = LineageRecords(run_id)
    records.states = [state_row(i) for i in items]
    records.cots = [row for item in items for row in cot_rows(run_id, item)]
    return records
