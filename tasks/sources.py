"""The sources of a run: every entry of a directory, or every row of a CSV/Parquet manifest.

Each one becomes a work item, even when it cannot be used: a row with a bad value or a directory
entry that cannot be read fails on its own at ingest, with its reason, and the rest of the run goes on.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from storage import is_s3_uri
from storage.sources import canonical_source
from tasks.items import WorkItem

MANIFEST_SUFFIXES = {".csv", ".parquet"}
# Errors of manifest rows whose values are unusable start with this, then the row number.
ROW_ERROR_PREFIX = "row "


class ManifestError(ValueError):
    """The input listing itself is unusable (the run cannot start)."""


def _optional_text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _seconds(text: str | None, column: str, *, positive: bool) -> float | None:
    """A start or duration value; raises ValueError with the reason when it is unusable."""
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"column '{column}' is not a number: {text!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"column '{column}' must be a finite number >= 0, got {text!r}")
    if positive and number == 0:
        raise ValueError(f"column '{column}' is 0: give a positive duration, or leave it empty for the whole video")
    return number


def _format_seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def segment_label(start_sec: float, duration_sec: float | None) -> str:
    """'' for the whole video, else 'START+DURATION' ('START+' runs to the end of the video)."""
    if start_sec == 0 and duration_sec is None:
        return ""
    return f"{_format_seconds(start_sec)}+{'' if duration_sec is None else _format_seconds(duration_sec)}"


def _manifest_rows(path: Path) -> list[dict[str, object]]:
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise ManifestError(f"manifest {path} cannot be read: {exc}") from exc


def resolve_location(video: str, base: Path) -> str:
    """Manifest paths are relative to the manifest's folder; URIs and absolute paths stay as they are."""
    if is_s3_uri(video) or os.path.isabs(video):
        return video
    return str(base / video)


def _manifest_item(row: dict[str, object], n: int, manifest: Path, display: str) -> WorkItem:
    video = _optional_text(row.get("video"))
    raw_start, raw_duration = _optional_text(row.get("start")), _optional_text(row.get("duration"))
    fields: dict[str, object] = dict(
        position=n,
        manifest_id=_optional_text(row.get("id")),
        provided_caption=_optional_text(row.get("caption")),
        provided_cot=_optional_text(row.get("caption_cot")),
    )
    if video is None:
        return WorkItem(source=f"{canonical_source(str(manifest))}#row={n}",
                        source_display=f"{display} row {n}", row_error=f"{ROW_ERROR_PREFIX}{n}: empty 'video' value", **fields)
    source = video if is_s3_uri(video) else canonical_source(video, base=manifest.parent)
    try:
        start = _seconds(raw_start, "start", positive=False) or 0.0
        duration = _seconds(raw_duration, "duration", positive=True)
    except ValueError as exc:
        return WorkItem(source=source, source_display=video, segment=f"{raw_start or ''}+{raw_duration or ''}",
                        row_error=f"{ROW_ERROR_PREFIX}{n}: {exc}", **fields)
    return WorkItem(source=source, source_display=video, segment=segment_label(start, duration), start_sec=start,
                    requested_duration_sec=duration, **fields)


def _directory_items(path: Path, input_spec: str) -> list[WorkItem]:
    # Every visible entry is a source, readable or not (links, loops and folders fail at ingest).
    names = sorted(name for name in os.listdir(path) if not name.startswith("."))
    return [
        WorkItem(source=canonical_source(os.path.join(input_spec, name)),
                 source_display=os.path.join(input_spec, name), position=i)
        for i, name in enumerate(names)
    ]


def _keep_rows_apart(items: list[WorkItem]) -> list[WorkItem]:
    """A manifest may list the same video and segment twice (e.g. with two captions): each row keeps
    its own lineage row, told apart by its row number."""
    seen: set[tuple[str, str]] = set()
    for item in items:
        if item.row_key in seen:
            item.segment = f"{item.segment}#row={item.position}"
        seen.add(item.row_key)
    return items


def list_sources(input_spec: str) -> list[WorkItem]:
    """The sources of a run: every entry of a directory, or every row of a CSV/Parquet manifest."""
    path = Path(input_spec).expanduser()
    if is_s3_uri(input_spec):
        items = [video_item(input_spec)]
    elif not os.path.lexists(path):
        raise ManifestError(f"{input_spec} does not exist")
    elif path.is_dir():
        items = _directory_items(path, input_spec)
    elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        rows = _manifest_rows(path)
        if rows and "video" not in rows[0]:
            raise ManifestError(f"manifest {input_spec} has no 'video' column")
        items = _keep_rows_apart([_manifest_item(row, n, path, input_spec) for n, row in enumerate(rows)])
    else:
        items = [video_item(input_spec)]
    if not items:
        raise ManifestError(f"no inputs: {input_spec} lists no videos")
    return items


def video_item(video: str, *, caption: str | None = None, caption_cot: str | None = None) -> WorkItem:
    """One video given on its own (a single-file input, or the demo's upload)."""
    source = video if is_s3_uri(video) else canonical_source(video)
    return WorkItem(source=source, source_display=video, position=0, provided_caption=caption,
                    provided_cot=caption_cot)


def default_roots(input_spec: str) -> tuple[str, ...]:
    """Where a run may read when no --input-root is given, plus any S3 URI: a directory input and its
    subfolders, a manifest's folder and its subfolders, or the single file named."""
    path = Path(input_spec).expanduser()
    if is_s3_uri(input_spec):
        return ("s3://",)
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return (os.path.realpath(path.parent), "s3://")
    return (os.path.realpath(path), "s3://")
