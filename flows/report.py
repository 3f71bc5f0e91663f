"""What a run shows in the Prefect UI: a progress bar, a summary table and a markdown report."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, unquote, urlparse
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows.report_scores import score_sections
from tasks.artifact_store import ArtifactStore
from tasks.cache_keys import output_keys
from tasks.config import PipelineSettings
from tasks.handles import process_handles
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
    """The progress artifact of one run, updated as batches finish.

    The artifact is updated at most once per `min_interval_s` (and when the last item finishes): each
    update is an API call, a real share of the driver's cost per item when batches are small.
    """

    def __init__(self, run_id: str, total: int, min_interval_s: float = 1.0) -> None:
        self.total = total
        self.done = 0
        self.min_interval_s = min_interval_s
        self._last_update = float("-inf")
        self.artifact_id: UUID = create_progress_artifact(
            0.0, key=_key(run_id, "progress"), description=f"Dubbing run {run_id}: items finished"
        )

    def advance(self, finished: int) -> None:
        self.done += finished
        now = time.monotonic()
        if self.done >= self.total or now - self._last_update >= self.min_interval_s:
            self._last_update = now
            update_progress_artifact(self.artifact_id, 100.0 * min(self.done, self.total) / max(self.total, 1))
        for listener in progress_listeners:
            listener(self.done, self.total)


def publish_summary(run_id: str, items: list[WorkItem], stage_seconds: dict[str, float]) -> None:
    counts = Counter(i.status for i in items)
    rows = [{"metric": f"items {status}", "value": n} for status, n in sorted(counts.items())]
    rows.append({"metric": "items cached (reused from earlier runs)", "value": sum(1 for i in items if i.cached)})
    rows += [{"metric": f"time in {stage} (s)", "value": round(s, 3)} for stage, s in stage_seconds.items()]
    create_table_artifact(rows, key=_key(run_id, "summary"), description=f"Dubbing run {run_id}: summary")


def publish_report(run_id: str, items: list[WorkItem], settings: PipelineSettings) -> None:
    store = process_handles().store(settings)
    markdown = report_markdown(
        run_id, items, preset=settings.preset, outputs=lambda item: outputs_cell(item, store, settings)
    )
    create_markdown_artifact(markdown, key=_key(run_id, "report"), description=f"Dubbing run {run_id}")


def report_markdown(
    run_id: str, items: list[WorkItem], *, preset: str, outputs: Callable[[WorkItem], str]
) -> str:
    """The run's report: counts, a table of outputs, then every failure with its full reason.

    Sources and reasons are user data: escaped, so a crafted file name renders as text, never as a link.
    Reasons are list items, which wrap, rather than table cells, which the UI cuts.
    """
    counts = Counter(i.status for i in items)
    cached = sum(1 for i in items if i.cached)
    lines = [f"# Dubbing run {escape_markdown(run_id)}", ""]
    if preset == "tiny":
        lines += [TINY_WARNING, ""]
    for status, n in sorted(counts.items()):
        suffix = f" ({cached} cached from earlier runs)" if status == "succeeded" and cached else ""
        lines.append(f"- {status}: {n}{suffix}")
    succeeded = [i for i in items if i.status == "succeeded"]
    if succeeded:
        lines += ["", "## Outputs", "", "| source | outputs |", "|---|---|"]
        lines += [f"| {escape_markdown(i.source)} | {outputs(i)} |" for i in succeeded]
    problems = [i for i in items if i.status != "succeeded"]
    if problems:
        lines += ["", "## Failed and rejected", ""]
        for item in problems:
            lines.append(
                f"- **{item.status}** at {escape_markdown(item.failed_at)}: {escape_markdown(item.source)}  \n"
                f"  {escape_markdown(item.error or 'no reason recorded')}"
            )
    lines += score_sections(items)
    return "\n".join(lines) + "\n"


def outputs_cell(item: WorkItem, store: ArtifactStore, settings: PipelineSettings) -> str:
    """Clickable links where the browser can follow them (presigned S3 URLs, or a served local folder);
    otherwise the output folder as a path to copy: browsers refuse file:// links from a web page."""
    keys = output_keys(item)
    links = {kind: store.share_url(key, expires_s=settings.link_expiry_s) for kind, key in keys.items()}
    if all(links.values()):
        return " · ".join(f"[{kind}](<{url}>)" for kind, url in links.items())
    if settings.artifact_base_url:
        base = settings.artifact_base_url.rstrip("/")
        return " · ".join(f"[{kind}](<{base}/{quote(key)}>)" for kind, key in keys.items())
    folder = Path(unquote(urlparse(item.metrics_uri or "").path)).parent
    return code_span(f"{folder}/")


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def escape_markdown(text: str) -> str:
    """Text that renders as itself in Markdown (and in a table cell): no link, emphasis or HTML."""
    one_line = " ".join(text.splitlines())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", one_line.replace("&", "&amp;").replace("<", "&lt;"))


def code_span(text: str) -> str:
    """`text` as inline code, whatever backticks it holds (usable in a table cell)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    cell_safe = text.replace("|", "\\|")
    return f"{fence} {cell_safe} {fence}"
