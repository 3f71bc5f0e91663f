"""The report's per-run histograms of the listening scores (DeSync, CLAP, speech, music)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tasks.items import WorkItem

# (score, lowest, highest, bin width): DeSync bins follow its 0.2 s offset classes.
HISTOGRAMS = (
    ("desync_sec", 0.0, 2.0, 0.2),
    ("clap", -1.0, 1.0, 0.2),
    ("speech", 0.0, 1.0, 0.1),
    ("music", 0.0, 1.0, 0.1),
)
BAR_WIDTH = 30


def histogram(values: Sequence[float], low: float, high: float, width: float) -> list[tuple[float, float, int]]:
    """(bin start, bin end, count) for equal bins over [low, high]; the top edge falls in the last bin."""
    bins = max(1, round((high - low) / width))
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, math.floor((v - low) / width + 1e-9)))] += 1
    return [(round(low + i * width, 6), round(low + (i + 1) * width, 6), c) for i, c in enumerate(counts)]


def score_sections(items: Sequence[WorkItem]) -> list[str]:
    """Markdown lines: one histogram table per score over the items this run scored."""
    lines: list[str] = []
    for name, low, high, width in HISTOGRAMS:
        values = [v for i in items if isinstance(v := i.scores.get(name), (int, float)) and math.isfinite(v)]
        if not values:
            continue
        table = histogram(values, low, high, width)
        peak = max(c for _, _, c in table)
        lines += ["", f"### {name} ({len(values)} items, mean {sum(values) / len(values):.3f})", "",
                  "| bin | items | |", "|---|---|---|"]
        lines += [
            f"| [{a:g}, {b:g}) | {c} | {'█' * round(BAR_WIDTH * c / peak)} |" for a, b, c in table
        ]
    return ["", "## Listening scores", *lines] if lines else []
