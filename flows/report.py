"""What a run shows in the Prefect UI: a progress bar, a summary table and a markdown report."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from tasks.items import WorkItem

TINY_WARNING = (
    "> **Note:** this run used the `tiny` preset, whose models are randomly initialised. "
    "Its audio is noise; it only exercises the pipeline."
)


def _key(run_id: str, what: str) -> str:
    return f"thinksound-{what}-{run_id}".lower().replace("_", "-")


# Terminal front-ends (the CLI's progress bar) subscribe here; called with (done, total).
progress_listeners: list[Callable[[int, int], None]] = []
# Front-ends that show the running stage (the web demo) subscribe here; called with the stage name.
stage_listeners: list[Callable[[str], None]] = []


class RunProgress:
    """The progress artifact of one run, updated as batches finish."""

    def __init__(self, run_id: str, total: int) -> None:
        self.total = total
        self.done = 0
        self.artifact_id: UUID = create_progress_artifact(
            0.0, key=_key(run_id, "progress"), description=f"Dubbing run {run_id}: items finished"
        )

    def advance(self, finished: int) -> None:
        self.done += finished
        update_progress_artifact(self.artifact_id, 100.0 * min(self.done, self.total) / max(self.total, 1))
        for listener in progress_listeners:
            listener(self.done, self.total)


def publish_summary(run_id: str, items: list[WorkItem], stage_seconds: dict[str, float]) -> None:
    counts = Counter(("cached" if i.cached else i.status) for i in items)
    rows = [{"metric": f"items {status}", "value": n} for status, n in sorted(counts.items())]
    rows += [{"metric": f"time in {stage} (s)", "value": round(s, 3)} for stage, s in stage_seconds.items()]
    create_table_artifact(rows, key=_key(run_id, "summary"), description=f"Dubbing run {run_id}: summary")


def publish_report(run_id: str, items: list[WorkItem], preset: str) -> None:
    by_status: dict[str, list[WorkItem]] = defaultdict(list)
    for item in items:
        by_status[item.status].append(item)
    lines = [f"# Dubbing run `{run_id}`", ""]
    if preset == "tiny":
        lines += [TINY_WARNING, ""]
    lines += [f"- {status}: {len(group)}" for status, group in sorted(by_status.items())]
    lines += ["", "| source | status | outputs / reason |", "|---|---|---|"]
    for item in items:
        if item.status == "succeeded":
            detail = f"[audio]({item.audio_uri}) · [video]({item.video_uri}) · [metrics]({item.metrics_uri})"
        else:
            detail = (item.error or "").replace("|", "/")
        lines.append(f"| `{item.source}` | {item.status}{' (cached)' if item.cached else ''} | {detail} |")
    create_markdown_artifact("\n".join(lines), key=_key(run_id, "report"), description=f"Dubbing run {run_id}")
