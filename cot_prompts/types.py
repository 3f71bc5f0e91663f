"""Request and result records of the CoT stage, shared by every backend."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# ThinkSound's T5 encoder reads 77 tokens (end-of-sequence token included) and truncates the rest.
T5_TOKEN_BUDGET = 77

TokenCounter = Callable[[str], int]
BackendName = Literal["vllm", "provided", "template", "none"]


class CotError(RuntimeError):
    """The CoT stage as a whole cannot run (server unreachable, model not served, bad configuration)."""


@dataclass(frozen=True)
class CotRequest:
    """One item to describe: a video (or a segment of it) plus the manifest's optional texts."""

    item_id: str
    video_path: Path
    duration_sec: float
    caption: str | None = None
    caption_cot: str | None = None
    start_sec: float = 0.0


@dataclass(frozen=True)
class CotResult:
    """The CoT of one item and its lineage; `error` set means the item failed for that reason."""

    item_id: str
    caption: str
    caption_cot: str
    backend: BackendName
    model: str | None
    prompt_version: str | None
    prompt_hash: str | None
    raw_answer: str | None
    parsed: Mapping[str, Any] | None
    t5_tokens: int  # length of the CoT in T5 tokens before any shortening
    shortened: bool
    latency_s: float
    retries: int
    error: str | None
    http_s: float = 0.0  # time spent waiting on the server, so callers can tell their own overhead
    t5_truncated_tokens: int = 0  # tokens cut off the end of a text the user wrote, to fit the budget

    @property
    def ok(self) -> bool:
        return self.error is None
