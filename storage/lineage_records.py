"""Typed rows for the batched lineage writes, and the value checks shared by all writes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Stage(StrEnum):
    """The pipeline's stages, in the order an item meets them; the values are what lineage's `stage`
    columns hold."""

    INGEST = "ingest"
    COT = "cot"
    FEATURES = "features"
    SYNTHESIS = "synthesis"
    QC = "qc"
    PUBLISH = "publish"


STAGES = tuple(stage.value for stage in Stage)
RUN_STATUSES = ("running", "completed", "crashed")
ITEM_STATUSES = ("pending", "running", "succeeded", "failed", "rejected")
ATTEMPT_STATUSES = ("succeeded", "failed", "rejected", "cached")
TERMINAL = ("succeeded", "failed", "rejected")

Timestamp = datetime | float | int


@dataclass(frozen=True, kw_only=True)
class SourceRow:
    """One input of a run: its identity (canonical path or URI, plus the segment) and how the user gave it."""

    source: str
    item_id: str | None
    position: int
    segment: str = ""
    source_display: str | None = None
    start_sec: float | None = None
    requested_duration_sec: float | None = None
    manifest_id: str | None = None
    caption: str | None = None
    caption_cot: str | None = None


@dataclass(frozen=True, kw_only=True)
class StateUpdate:
    """Where one source (segment) of a run stands now."""

    source: str
    status: str
    segment: str = ""
    stage: str | None
    error: str | None = None
    item_id: str | None = None

    def __post_init__(self) -> None:
        check_choice("item status", self.status, ITEM_STATUSES)
        if self.stage is not None:
            check_choice("stage", self.stage, STAGES)
        if self.status in ("failed", "rejected") and not self.error:
            raise ValueError(f"a {self.status} item needs an error reason (source {self.source!r})")


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One execution of one stage for one item (or one batch, with item_id None)."""

    run_id: str
    stage: str
    status: str
    started_at: Timestamp
    finished_at: Timestamp
    item_id: str | None = None
    source: str | None = None
    segment: str = ""
    input_hash: str | None = None
    params: Mapping[str, Any] | None = None
    model_version: str | None = None
    prompt_version: str | None = None
    error: str | None = None
    details: Mapping[str, Any] | None = None
    # `<hostname>:<pid>` of the process that ran the attempt's compute.
    worker: str | None = None

    def __post_init__(self) -> None:
        check_choice("stage", self.stage, STAGES)
        check_choice("attempt status", self.status, ATTEMPT_STATUSES)


@dataclass(frozen=True, kw_only=True)
class CotRecord:
    """The chain-of-thought used for one source, and where it came from."""

    run_id: str
    backend: str
    item_id: str | None = None
    source: str | None = None
    segment: str = ""
    model: str | None = None
    prompt_version: str | None = None
    prompt_hash: str | None = None
    caption: str | None = None
    caption_cot: str | None = None
    raw_answer: str | None = None
    parsed: Mapping[str, Any] | None = None
    t5_tokens: int | None = None
    t5_truncated_tokens: int | None = None
    latency_s: float | None = None
    retries: int = 0
    error: str | None = None
    # The window this CoT describes (index, seconds within the segment); None: the whole segment.
    window_index: int | None = None
    window_start_sec: float | None = None
    window_end_sec: float | None = None


def check_choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {allowed}, got {value!r}")


def to_utc(value: Timestamp | None) -> datetime:
    """Naive UTC datetime for a datetime (aware or naive UTC) or a POSIX time; None means now."""
    if value is None:
        return datetime.now(UTC).replace(tzinfo=None)
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    return datetime.fromtimestamp(float(value), UTC).replace(tzinfo=None)


def to_json(value: Mapping[str, Any] | list[Any] | None) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, default=str)


def coerce(cls: type, row: Any) -> Any:
    """Accept either an instance of the record class or a mapping of its fields."""
    if isinstance(row, cls):
        return row
    if isinstance(row, Mapping):
        return cls(**row)
    raise TypeError(f"expected {cls.__name__} or a mapping, got {type(row).__name__}")
