"""Ingest: list the sources, fetch and content-hash each one, probe it, and fix its segment."""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

from storage import SourceRow, fetch_input, sha256_file
from tasks import runtime
from tasks.config import MIN_CONDITIONING_SEC, PipelineSettings
from tasks.items import WorkItem, attempt, item_identity
from tasks.retry import stage_task
from tasks.s3_access import is_s3_uri, s3_config
from thinksound.features import VideoDecodeError, probe_video

MANIFEST_SUFFIXES = {".csv", ".parquet"}
# Durations are rounded up to this grid so that similar clips share a synthesis bucket; the audio is
# trimmed back to the exact duration before publishing.
DURATION_GRID_SEC = 0.25
# The model's CLIP and sync lengths are 8 and 24 tokens per whole second: below 1 s they are empty.
MIN_GENERATION_SEC = 1.0


class ManifestError(ValueError):
    """The input listing itself is unusable (the run cannot start)."""


def _optional_text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _optional_float(value: object, column: str, row: int) -> float | None:
    text = _optional_text(value)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError as exc:
        raise ManifestError(f"row {row}: column '{column}' is not a number: {text!r}") from exc
    if not math.isfinite(number) or number < 0:
        raise ManifestError(f"row {row}: column '{column}' must be a finite number >= 0, got {text!r}")
    return number


def _manifest_rows(path: Path) -> list[dict[str, object]]:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def resolve_location(video: str, base: Path) -> str:
    """Manifest paths are relative to the manifest's folder; URIs and absolute paths stay as they are."""
    if video.startswith("s3://") or os.path.isabs(video):
        return video
    return str(base / video)


def list_sources(input_spec: str) -> list[WorkItem]:
    """The sources of a run: every file of a directory, or every row of a CSV/Parquet manifest."""
    path = Path(input_spec)
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        return [WorkItem(source=os.path.join(input_spec, name), position=i) for i, name in enumerate(names)]
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        rows = _manifest_rows(path)
        if rows and "video" not in rows[0]:
            raise ManifestError(f"manifest {input_spec} has no 'video' column")
        items = []
        for i, row in enumerate(rows):
            video = _optional_text(row.get("video"))
            if video is None:
                raise ManifestError(f"row {i}: empty 'video' value")
            items.append(
                WorkItem(
                    source=video,
                    location=resolve_location(video, path.parent),
                    position=i,
                    manifest_id=_optional_text(row.get("id")),
                    provided_caption=_optional_text(row.get("caption")),
                    provided_cot=_optional_text(row.get("caption_cot")),
                    start_sec=_optional_float(row.get("start"), "start", i) or 0.0,
                    requested_duration_sec=_optional_float(row.get("duration"), "duration", i),
                )
            )
        return items
    if path.is_file():
        return [WorkItem(source=input_spec, position=0)]
    raise ManifestError(f"input {input_spec!r} is neither a directory, a manifest (.csv/.parquet) nor a file")


def _hash_memo_key(path: Path) -> str:
    stat = path.stat()
    return f"file-sha256:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _segment_duration(item: WorkItem, video_duration: float, settings: PipelineSettings) -> float:
    available = video_duration - item.start_sec
    if available <= 0:
        raise VideoDecodeError(
            f"start {item.start_sec:.2f} s is beyond the end of the video ({video_duration:.2f} s)"
        )
    duration = item.requested_duration_sec or min(available, settings.max_duration_sec)
    duration = min(duration, available)
    if duration < MIN_CONDITIONING_SEC:
        raise VideoDecodeError(
            f"too short to condition on: {duration:.2f} s of video, at least {MIN_CONDITIONING_SEC:.2f} s "
            "(16 frames at 25 fps) are needed"
        )
    return duration


def generation_duration(duration_sec: float) -> float:
    """The duration the generator runs at: the segment rounded up to the bucketing grid, and at least
    1 s (shorter clips repeat their last frame, as the original does, and the audio is trimmed back)."""
    rounded = math.ceil(duration_sec / DURATION_GRID_SEC - 1e-9) * DURATION_GRID_SEC
    return max(rounded, MIN_GENERATION_SEC)


def ingest_one(item: WorkItem, settings: PipelineSettings, known_hashes: dict[str, str]) -> WorkItem:
    """Fetch, hash and probe one source; a broken input fails this item, never the run.

    `known_hashes` maps (path, size, mtime) memo keys to digests, so reruns do not re-read every byte;
    new digests are added to it.
    """
    try:
        location = item.fetch_location
        s3 = s3_config(settings.s3) if is_s3_uri(location) else None
        local = fetch_input(location, settings.scratch_dir / "inputs", s3=s3)
    except FileNotFoundError:
        item.fail("ingest", f"input not found: {item.source}")
        return item
    except ValueError as exc:  # an unusable location, e.g. an s3:// URI that names only a bucket
        item.fail("ingest", str(exc))
        return item
    if local.stat().st_size == 0:
        item.fail("ingest", "empty file (0 bytes)")
        return item
    item.local_path = str(local)
    memo_key = _hash_memo_key(local)
    if memo_key not in known_hashes:
        known_hashes[memo_key] = sha256_file(local)
    item.content_hash = known_hashes[memo_key]
    try:
        info = probe_video(local)
        item.video_duration_sec = info.duration_sec
        item.video_codec = info.codec
        item.duration_sec = _segment_duration(item, info.duration_sec, settings)
    except VideoDecodeError as exc:
        item.fail("ingest", str(exc))
        return item
    item.item_id = item_identity(item.content_hash, item.start_sec, item.duration_sec)
    item.stage = "cot"
    return item


@stage_task("ingest")
def ingest(batch_id: str, items: list[WorkItem], settings: PipelineSettings, run_id: str) -> list[WorkItem]:
    """Ingest a batch of sources and record each outcome in lineage."""
    lin = runtime.lineage(settings)
    local = [Path(i.fetch_location) for i in items if not i.fetch_location.startswith("s3://")]
    memo_keys = [_hash_memo_key(p) for p in local if p.is_file()]
    known_hashes = lin.cache_get_many(memo_keys)
    already_known = set(known_hashes)
    attempts, item_rows = [], []
    for item in items:
        started = time.time()
        ingest_one(item, settings, known_hashes)
        if item.item_id is not None:
            item_rows.append(
                dict(
                    item_id=item.item_id,
                    content_hash=item.content_hash,
                    start_sec=item.start_sec,
                    duration_sec=item.duration_sec,
                    probe={"video_duration_sec": item.video_duration_sec, "codec": item.video_codec},
                )
            )
        attempts.append(
            attempt(
                run_id,
                "ingest",
                item,
                status="failed" if item.status == "failed" else "succeeded",
                input_hash=item.content_hash,
                params={"start_sec": item.start_sec, "duration_sec": item.duration_sec},
                started_at=started,
                finished_at=time.time(),
                error=item.error,
            )
        )
    lin.cache_put_many([(k, "file-sha256", v) for k, v in known_hashes.items() if k not in already_known])
    lin.upsert_items(item_rows)
    lin.add_sources(
        run_id,
        [
            SourceRow(
                source=item.source,
                item_id=item.item_id,
                manifest_id=item.manifest_id,
                caption=item.provided_caption,
                caption_cot=item.provided_cot,
                position=item.position,
            )
            for item in items
        ],
    )
    lin.record_attempts(attempts)
    return items
