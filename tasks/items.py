"""The small reference record that moves one source video through the stages."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Literal

from storage import Stage

Status = Literal["pending", "succeeded", "failed", "rejected"]


def stable_hash(*parts: object, length: int = 32) -> str:
    """A short, stable hex digest of JSON-serialisable parts, for content-addressed keys."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


@dataclass
class WorkItem:
    """One source as given by the user, and everything the stages learn about it.

    `source` is the identity recorded in lineage (an absolute path with resolved folders, or a URI) and
    `source_display` the spelling the user gave. `segment` tells two segments of one source apart.
    Holds references (keys, URIs, hashes), never tensors, so that Prefect can pass it between tasks
    cheaply.
    """

    source: str
    position: int
    source_display: str | None = None
    segment: str = ""
    row_error: str | None = None
    location: str | None = None
    manifest_id: str | None = None
    provided_caption: str | None = None
    provided_cot: str | None = None
    start_sec: float = 0.0
    requested_duration_sec: float | None = None

    local_path: str | None = None
    content_hash: str | None = None
    item_id: str | None = None
    video_duration_sec: float | None = None
    duration_sec: float | None = None
    video_codec: str | None = None

    caption: str = ""
    caption_cot: str = ""
    cot_backend: str | None = None
    cot_key: str | None = None
    t5_tokens: int | None = None
    cot_record: dict[str, object] | None = None

    video_features_key: str | None = None
    text_features_key: str | None = None
    result_key: str | None = None
    seed: int | None = None
    generation: int = 0
    raw_audio_key: str | None = None
    candidates: list[dict[str, object]] = field(default_factory=list)
    # Per-window CoTs from the manifest ({"start", "end", "cot"}), and the windows (tasks/windows.py).
    window_cots: list[dict[str, object]] | None = None
    windows: list[dict[str, object]] = field(default_factory=list)
    seams: list[dict[str, float]] = field(default_factory=list)

    status: Status = "pending"
    # The stage a pending item meets next; a published item stays at publish.
    next_stage: Stage = Stage.INGEST
    # The stage a failed item failed at (qc for a rejected one); None for the others.
    failed_at: Stage | None = None
    error: str | None = None
    cached: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    # The winning candidate's listening scores (desync_sec, clap, speech, music).
    scores: dict[str, float] = field(default_factory=dict)
    rejection_reasons: list[str] = field(default_factory=list)
    audio_uri: str | None = None
    video_uri: str | None = None
    metrics_uri: str | None = None

    @property
    def fetch_location(self) -> str:
        """Where the bytes are: the source itself, or the source resolved against its manifest's folder."""
        return self.location or self.source

    @property
    def row_key(self) -> tuple[str, str]:
        """One run row per key: the source and its segment."""
        return self.source, self.segment

    @property
    def is_pending(self) -> bool:
        return self.status == "pending"

    @property
    def lineage_stage(self) -> Stage:
        """The `stage` lineage records with the item's status: where it failed or was rejected, else the
        stage it meets next (publish, once published)."""
        return self.failed_at if self.failed_at is not None else self.next_stage

    @property
    def work_key(self) -> str:
        """Sources sharing this key are the same work: same bytes, same segment, same provided text."""
        return stable_hash(self.item_id, self.provided_caption, self.provided_cot)

    def adopt_outcome(self, representative: WorkItem) -> None:
        """A duplicate source shares its representative's work, and so its outcome and outputs."""
        for name in _OUTCOME_FIELDS:
            setattr(self, name, getattr(representative, name))

    def fail(self, stage: Stage, reason: str) -> None:
        self.status = "failed"
        self.failed_at = stage
        self.error = reason

    def reject(self, reasons: list[str]) -> None:
        self.status = "rejected"
        self.failed_at = Stage.QC
        self.rejection_reasons = list(reasons)
        self.error = "; ".join(reasons)


_OUTCOME_FIELDS = (
    "caption",
    "caption_cot",
    "cot_backend",
    "cot_key",
    "cot_record",
    "t5_tokens",
    "result_key",
    "seed",
    "generation",
    "windows",
    "seams",
    "status",
    "next_stage",
    "failed_at",
    "error",
    "cached",
    "metrics",
    "scores",
    "candidates",
    "rejection_reasons",
    "audio_uri",
    "video_uri",
    "metrics_uri",
)


def item_identity(content_hash: str, start_sec: float, duration_sec: float) -> str:
    """Item identity: the content hash plus the segment, so renamed copies are one item."""
    return stable_hash(content_hash, round(start_sec, 3), round(duration_sec, 3), length=24)


def jsonable(value: object) -> object:
    """Replace non-finite floats (silence has -inf LUFS) by None so the value is valid JSON."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def batch_share(started: float, finished: float, index: int, count: int) -> tuple[float, float]:
    """Item `index`'s slice of a batched call, so per-item timings add up to the batch's wall time."""
    share = (finished - started) / max(count, 1)
    return started + index * share, started + (index + 1) * share


def worker_identity() -> str:
    """`<hostname>:<pid>` of this process; asked each time, since a worker may be a forked process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def attempt(run_id: str, stage: Stage, item: WorkItem, *, status: str, **fields: object) -> dict[str, object]:
    """A lineage stage-attempt row for one item (timings, hashes and details in `fields`), made by the
    process that ran the compute, which it names as the attempt's worker."""
    return dict(
        run_id=run_id, stage=stage, status=status, item_id=item.item_id, source=item.source,
        segment=item.segment, worker=worker_identity(), **fields,
    )
