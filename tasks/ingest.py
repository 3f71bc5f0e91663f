"""Ingest: check each source cheaply, fetch and probe it, content-hash it, and fix its segment."""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

from storage import SourceRow, Stage, fetch_input, sha256_file
from storage.sources import outside_roots
from tasks.cache_keys import file_hash_memo_key
from tasks.config import MIN_CONDITIONING_SEC, PipelineSettings
from tasks.executors import Batch, Executor
from tasks.handles import Handles
from tasks.items import WorkItem, item_identity
from tasks.records import LineageRecords, StageResult
from tasks.retry import stage_task
from tasks.s3_access import is_s3_uri, s3_config
from thinksound.features import VideoDecodeError, probe_video

OUTSIDE_ROOTS = "input_outside_roots"


def _unreadable(path: str, shown: str) -> str | None:
    """Why a local input cannot be read, found without opening it; None when it looks readable."""
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"symlink loop: {shown} cannot be resolved"
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return f"dangling symlink: {shown} points to {os.readlink(path)}, which does not exist"
        if exc.errno == errno.ENOENT:
            return f"input not found: {shown}"
        if exc.errno == errno.EACCES:
            return f"permission denied: {shown}"
        return f"cannot read {shown}: {exc.strerror}"
    if stat.S_ISDIR(info.st_mode):
        return f"{shown} is a directory, not a video file (folders inside the input are not searched)"
    if not stat.S_ISREG(info.st_mode):
        return f"{shown} is not a regular file"
    if not os.access(path, os.R_OK):
        return f"permission denied: {shown}"
    return None


def admission_error(item: WorkItem, settings: PipelineSettings) -> str | None:
    """The checks that need neither the file's bytes nor its container: row values, the duration limit,
    the input roots and whether the file can be read at all."""
    if item.row_error:
        return item.row_error
    limit = settings.max_duration_sec
    if item.requested_duration_sec is not None and item.requested_duration_sec > limit + 1e-9:
        return (f"requested duration {item.requested_duration_sec:g} s is above the limit of {limit:g} s "
                "(--max-duration)")
    shown = item.source_display or item.source
    if settings.input_roots and outside_roots(item.fetch_location, settings.input_roots):
        return f"{OUTSIDE_ROOTS}: {shown} is outside the input roots ({', '.join(settings.input_roots)})"
    if is_s3_uri(item.fetch_location):
        return None
    return _unreadable(item.fetch_location, shown)


def _segment_duration(item: WorkItem, video_duration: float, settings: PipelineSettings) -> float:
    available = video_duration - item.start_sec
    if available <= 0:
        raise VideoDecodeError(
            f"start {item.start_sec:.2f} s is beyond the end of the video ({video_duration:.2f} s)"
        )
    limit = settings.max_duration_sec
    if item.requested_duration_sec is None and available > limit + 1e-6 and not settings.truncate:
        raise VideoDecodeError(
            f"too long: {available:.2f} s of video, the limit is {limit:g} s (--max-duration); "
            f"pass --truncate to dub its first {limit:g} s"
        )
    duration = item.requested_duration_sec or min(available, limit)
    duration = min(duration, available)
    if duration < MIN_CONDITIONING_SEC:
        raise VideoDecodeError(
            f"too short to condition on: {duration:.2f} s of video, at least {MIN_CONDITIONING_SEC:.2f} s "
            "(16 frames at 25 fps) are needed"
        )
    return duration


def ingest_one(item: WorkItem, settings: PipelineSettings, known_hashes: dict[str, str]) -> WorkItem:
    """Fetch, probe and hash one admitted source; a broken input fails this item, never the run.

    Nothing is hashed before its container has been probed. `known_hashes` maps (path, size, mtime)
    memo keys to digests, so reruns do not re-read every byte; new digests are added to it.
    """
    try:
        location = item.fetch_location
        s3 = s3_config(settings.s3) if is_s3_uri(location) else None
        local = fetch_input(location, settings.scratch_dir / "inputs", s3=s3)
    except FileNotFoundError:
        item.fail(Stage.INGEST, f"input not found: {item.source_display or item.source}")
        return item
    except ValueError as exc:  # an unusable location, e.g. an s3:// URI that names only a bucket
        item.fail(Stage.INGEST, str(exc))
        return item
    if local.stat().st_size == 0:
        item.fail(Stage.INGEST, "empty file (0 bytes)")
        return item
    item.local_path = str(local)
    try:
        info = probe_video(local)
        item.video_duration_sec = info.duration_sec
        item.video_codec = info.codec
        item.duration_sec = _segment_duration(item, info.duration_sec, settings)
    except VideoDecodeError as exc:
        item.fail(Stage.INGEST, str(exc))
        return item
    memo_key = file_hash_memo_key(local)
    if memo_key not in known_hashes:
        known_hashes[memo_key] = sha256_file(local)
    item.content_hash = known_hashes[memo_key]
    item.item_id = item_identity(item.content_hash, item.start_sec, item.duration_sec)
    item.next_stage = Stage.COT
    return item


def hash_memo_keys(items: list[WorkItem], settings: PipelineSettings) -> list[str]:
    """The lineage cache keys of the admitted local inputs' content hashes, for the driver to look up."""
    return [
        file_hash_memo_key(Path(i.fetch_location))
        for i in items
        if i.is_pending and not is_s3_uri(i.fetch_location) and admission_error(i, settings) is None
    ]


def run_ingest(handles: Handles, batch: Batch) -> StageResult:
    """Ingest a batch of sources; `batch.cached` holds the content hashes lineage already knows.

    Cheap checks come first (see `admission_error`): nothing outside the input roots is opened."""
    settings, items = batch.settings, batch.items
    records = LineageRecords(batch.run_id)
    for item in items:
        if (reason := admission_error(item, settings)) is not None:
            item.fail(Stage.INGEST, reason)
    known_hashes = dict(batch.cached)
    for item in items:
        started = time.time()
        if item.is_pending:
            ingest_one(item, settings, known_hashes)
        if item.item_id is not None:
            records.items.append(
                dict(
                    item_id=item.item_id,
                    content_hash=item.content_hash,
                    start_sec=item.start_sec,
                    duration_sec=item.duration_sec,
                    probe={"video_duration_sec": item.video_duration_sec, "codec": item.video_codec},
                )
            )
        records.attempt(
            Stage.INGEST,
            item,
            status="failed" if item.status == "failed" else "succeeded",
            input_hash=item.content_hash,
            params={"start_sec": item.start_sec, "duration_sec": item.duration_sec},
            started_at=started,
            finished_at=time.time(),
            error=item.error,
        )
        records.sources.append(
            SourceRow(
                source=item.source,
                segment=item.segment,
                source_display=item.source_display,
                start_sec=item.start_sec,
                requested_duration_sec=item.requested_duration_sec,
                item_id=item.item_id,
                manifest_id=item.manifest_id,
                caption=item.provided_caption,
                caption_cot=item.provided_cot,
                position=item.position,
            )
        )
    records.cache += [(k, "file-sha256", v) for k, v in known_hashes.items() if k not in batch.cached]
    return StageResult(items, records)


@stage_task("ingest")
def ingest(batch_id: str, batch: Batch, executor: Executor) -> StageResult:
    """Ingest a batch of sources: check, fetch, probe and hash each one (a CPU stage)."""
    return executor.run(run_ingest, batch, models=False)
