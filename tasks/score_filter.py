"""Choosing items by their listening scores (``reprocess --stage qc --where "desync_sec > 0.4"``).

The filter text is parsed into a whitelisted column, a whitelisted operator and a number; only those
fixed fragments reach the SQL, and the number is a bound parameter. Nothing the user typed is spliced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from storage import Lineage

FILTER_COLUMNS = ("desync_sec", "clap", "speech", "music", "best_of", "chosen_generation")
_OPERATORS = {">": ">", ">=": ">=", "<": "<", "<=": "<=", "=": "=", "==": "=", "!=": "<>"}
_PATTERN = re.compile(
    r"^\s*(?P<column>[a-z_]+)\s*(?P<op>>=|<=|==|!=|>|<|=)\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)


class ScoreFilterError(ValueError):
    """A ``--where`` text that is not COLUMN OP NUMBER over the known scores."""


@dataclass(frozen=True)
class ScoreFilter:
    column: str
    op: str
    value: float

    def __post_init__(self) -> None:
        # Column and operator become SQL text, so only the whitelisted ones may exist at all.
        if self.column not in FILTER_COLUMNS or self.op not in _OPERATORS:
            raise ScoreFilterError(f"not a score filter: {self.column!r} {self.op!r}")

    def sql(self) -> str:
        """The condition on view ``item_scores`` (alias ``s``) with one ``?`` for the value."""
        return f"s.{self.column} {_OPERATORS[self.op]} ?"


def parse_score_filter(text: str) -> ScoreFilter:
    """``"desync_sec > 0.4"`` -> ScoreFilter; anything else is a ScoreFilterError naming what is allowed."""
    match = _PATTERN.match(text)
    if match is None:
        raise ScoreFilterError(
            f"cannot read filter {text!r}: expected COLUMN OP NUMBER, e.g. 'desync_sec > 0.4' "
            f"(OP one of {', '.join(_OPERATORS)})"
        )
    if match["column"] not in FILTER_COLUMNS:
        raise ScoreFilterError(f"unknown score {match['column']!r}: filter on one of {', '.join(FILTER_COLUMNS)}")
    return ScoreFilter(column=match["column"], op=match["op"], value=float(match["value"]))


def check_where(where: str, stage: str | None) -> ScoreFilter:
    """The filter of ``reprocess --where``, which only makes sense for the qc stage that scores items."""
    if stage not in (None, "qc"):
        raise ScoreFilterError(f"--where filters listening scores, which the qc stage makes; got --stage {stage}")
    return parse_score_filter(where)


def select_scored(lin: Lineage, flt: ScoreFilter, *, run_id: str | None = None) -> list[dict]:
    """Published or rejected (source, segment) rows whose latest scores match, with their latest run and
    inputs (the columns ``select_for_reprocess`` gives)."""
    return lin.execute(
        "SELECT l.source, l.segment, l.item_id, l.status, l.stage, l.error, l.run_id, "
        "       rs.source_display, rs.start_sec, rs.requested_duration_sec, "
        "       rs.manifest_id, rs.caption, rs.caption_cot, rs.position "
        "FROM item_scores_latest s "
        "JOIN item_latest l ON l.source = s.source AND l.segment = s.segment "
        "LEFT JOIN run_sources rs ON rs.run_id = l.run_id AND rs.source = l.source AND rs.segment = l.segment "
        f"WHERE {flt.sql()} "
        "  AND l.status IN ('succeeded', 'rejected') "
        "  AND (?::VARCHAR IS NULL OR l.run_id = ?) "
        "ORDER BY l.run_started_at, l.run_id, rs.position NULLS LAST, l.source",
        [flt.value, run_id, run_id],
    )
