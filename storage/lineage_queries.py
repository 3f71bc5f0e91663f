"""Read queries over the lineage views; every value is passed as a parameter, never formatted in."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from storage.lineage_records import ITEM_STATUSES, STAGES, check_choice
from storage.sources import source_spellings

if TYPE_CHECKING:
    from storage.lineage import Lineage

_JSON_COLUMNS = frozenset({"params", "probe", "details", "parsed"})


def decode(row: dict[str, Any]) -> dict[str, Any]:
    """Parse the JSON columns that DuckDB returns as text."""
    for name in _JSON_COLUMNS.intersection(row):
        if isinstance(row[name], str):
            row[name] = json.loads(row[name])
    return row


def _spellings(source: str | None) -> list[str] | None:
    return None if source is None else source_spellings(source)


def item_status(lin: Lineage, source: str | None) -> list[dict[str, Any]]:
    """One row per (source, segment); `source` may be spelled any way that names the same file."""
    return lin.execute(
        "SELECT * FROM item_status WHERE ?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], source) "
        "ORDER BY source, start_sec, segment",
        [_spellings(source)] * 2,
    )


def item_cot(lin: Lineage, source: str | None) -> list[dict[str, Any]]:
    return lin.execute(
        "SELECT * FROM item_cot WHERE ?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], source) "
        "ORDER BY source, segment, window_index",
        [_spellings(source)] * 2,
    )


def failures(lin: Lineage, run_id: str | None) -> list[dict[str, Any]]:
    return lin.execute(
        "SELECT * FROM failures WHERE ?::VARCHAR IS NULL OR run_id = ? ORDER BY run_id, source", [run_id, run_id]
    )


def run_summary(lin: Lineage, run_id: str | None) -> list[dict[str, Any]]:
    return lin.execute(
        "SELECT * FROM run_summary WHERE ?::VARCHAR IS NULL OR run_id = ? ORDER BY started_at DESC, run_id",
        [run_id, run_id],
    )


def stage_timing(lin: Lineage, run_id: str | None) -> list[dict[str, Any]]:
    order = "CASE stage " + " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(STAGES)) + " END"
    return lin.execute(
        f"SELECT * FROM stage_timing WHERE ?::VARCHAR IS NULL OR run_id = ? ORDER BY run_id, {order}",
        [run_id, run_id],
    )


def run_states(lin: Lineage, run_id: str) -> list[dict[str, Any]]:
    """Effective state of every source of one run, in manifest order."""
    return lin.execute(
        "SELECT e.source, e.segment, e.item_id, e.status, e.stage, e.error, e.updated_at, rs.position "
        "FROM item_state_effective e LEFT JOIN run_sources rs "
        "  ON rs.run_id = e.run_id AND rs.source = e.source AND rs.segment = e.segment "
        "WHERE e.run_id = ? ORDER BY rs.position NULLS LAST, e.source",
        [run_id],
    )


def item_history(lin: Lineage, ref: str) -> list[dict[str, Any]]:
    """Everything recorded about an item id or a source (spelled any way that names the same file),
    across runs, oldest first.

    Each row has `event` ('source', 'state', 'attempt', 'artifact', 'metric' or 'cot') and `time`.
    """
    spellings = source_spellings(ref)
    linked = lin.execute(
        "SELECT DISTINCT item_id FROM items WHERE item_id = ? "
        "UNION SELECT DISTINCT item_id FROM run_sources WHERE list_contains(?::VARCHAR[], source) "
        "  AND item_id IS NOT NULL "
        "UNION SELECT DISTINCT item_id FROM item_state WHERE list_contains(?::VARCHAR[], source) "
        "  AND item_id IS NOT NULL",
        [ref, spellings, spellings],
    )
    items = sorted(r["item_id"] for r in linked)
    sources = sorted(
        set(spellings)
        | {r["source"] for r in lin.execute(
            "SELECT DISTINCT source FROM run_sources WHERE list_contains(?::VARCHAR[], item_id)", [items])}
    )
    by_item_or_source = "(list_contains(?::VARCHAR[], item_id) OR list_contains(?::VARCHAR[], source))"
    both = [items, sources]
    events: list[dict[str, Any]] = []
    queries = (
        ("source", "SELECT rs.*, r.started_at AS time FROM run_sources rs JOIN runs r USING (run_id) "
                   f"WHERE {by_item_or_source}",
         both),
        ("state", f"SELECT *, updated_at AS time FROM item_state_effective WHERE {by_item_or_source}", both),
        ("attempt", f"SELECT *, started_at AS time FROM stage_attempts WHERE {by_item_or_source}", both),
        ("artifact", "SELECT *, created_at AS time FROM artifacts WHERE list_contains(?::VARCHAR[], item_id)",
         [items]),
        ("metric", "SELECT m.*, r.started_at AS time FROM metrics m JOIN runs r USING (run_id) "
                   "WHERE list_contains(?::VARCHAR[], m.item_id)", [items]),
        ("cot", f"SELECT *, created_at AS time FROM cot WHERE {by_item_or_source}", both),
    )
    for event, sql, params in queries:
        for row in lin.execute(sql, params):
            events.append({"event": event, **row})
    events.sort(key=lambda e: (e["time"], e["event"]))
    return events


def select_for_reprocess(
    lin: Lineage,
    *,
    run_id: str | None,
    stage: str | None,
    error_contains: str | None,
    statuses: tuple[str, ...],
) -> list[dict[str, Any]]:
    """Sources whose latest outcome is in `statuses`, optionally only those that failed in `run_id`,
    at `stage`, or with `error_contains` (case-insensitive) in the error text.

    Manifest fields (id, caption, CoT, segment) come from the run of the latest outcome, so a rerun
    sees the same inputs.
    """
    for status in statuses:
        check_choice("status", status, ITEM_STATUSES)
    if stage is not None:
        check_choice("stage", stage, STAGES)
    return lin.execute(
        "SELECT l.source, l.segment, l.item_id, l.status, l.stage, l.error, l.run_id, "
        "       rs.source_display, rs.start_sec, rs.requested_duration_sec, "
        "       rs.manifest_id, rs.caption, rs.caption_cot, rs.position "
        "FROM item_latest l "
        "LEFT JOIN run_sources rs ON rs.run_id = l.run_id AND rs.source = l.source AND rs.segment = l.segment "
        "WHERE list_contains(?::VARCHAR[], l.status) "
        "  AND (?::VARCHAR IS NULL OR l.stage = ?) "
        "  AND (?::VARCHAR IS NULL OR contains(lower(coalesce(l.error, '')), lower(?))) "
        "  AND (?::VARCHAR IS NULL OR EXISTS ("
        "       SELECT 1 FROM item_state_effective e "
        "       WHERE e.run_id = ? AND e.source = l.source AND e.segment = l.segment "
        "         AND list_contains(?::VARCHAR[], e.status))) "
        "ORDER BY l.run_started_at, l.run_id, rs.position NULLS LAST, l.source",
        [list(statuses), stage, stage, error_contains, error_contains, run_id, run_id, list(statuses)],
    )
