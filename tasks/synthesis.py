"""Synthesis stage: generation in window-length buckets, ``best_of`` seeds per item, one seed per window."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import torch

from storage import Stage
from tasks.cache_keys import generator_version, item_seed, raw_audio_key, result_key
from tasks.config import PipelineSettings
from tasks.executors import Batch
from tasks.handles import Handles
from tasks.items import WorkItem, batch_share
from tasks.records import LineageRecords, StageResult
from tasks.scratch import own_scratch
from tasks.windows import assign_seeds, item_plan, redraw_regenerated_windows, windows_summary
from thinksound.features import Features, TextFeatures, VideoFeatures
from thinksound.long_form import decode_audio, sample_latents
from thinksound.track_file import TrackFile, TrackWriter
from thinksound.windows import WindowPlan

# Windows sampled in one model call at most (a 10-minute video has 75), bounding the DiT batch.
WINDOWS_PER_CALL = 96
# Samples divided by the peak at a time (10 s at 44.1 kHz).
NORMALIZE_CHUNK = 441_000


def write_candidate(pieces: Iterable[torch.Tensor], plan: WindowPlan, length: int, folder: Path) -> Path:
    """The candidate's peak-normalised audio, cut to `length` samples, as a track file in `folder`.

    The raw pieces go to disk first, while their peak is found over the whole decoded track, and a
    second pass divides by the peak (`peak_normalize` of the whole track), so no pass holds the track.
    """
    raw_path, out_path = folder / "raw.npy", folder / f"{uuid.uuid4().hex}.npy"
    pieces = iter(pieces)
    first = next(pieces)
    peak = first.abs().amax()
    with TrackWriter(raw_path, channels=first.shape[0], length=plan.track_len * plan.hop) as raw:
        raw.write(first.numpy())
        for piece in pieces:
            peak = torch.maximum(peak, piece.abs().amax())
            raw.write(piece.numpy())
    divisor = torch.where(peak > 0, peak, torch.ones_like(peak))
    with TrackWriter(out_path, channels=first.shape[0], length=length) as out:
        for start, chunk in TrackFile(raw_path).chunks(NORMALIZE_CHUNK):
            out.write((torch.from_numpy(chunk[:, : max(0, length - start)]) / divisor).numpy())
    raw_path.unlink()
    return out_path


def _window_features(handles: Handles, window: dict, settings: PipelineSettings) -> Features:
    store = handles.store(settings)
    video = VideoFeatures.from_bytes(store.get_bytes(window["video_features_key"]))
    key = window["text_features_key"]
    text = TextFeatures.from_bytes(store.get_bytes(key)) if key else None
    return Features(video=video, text=text)


def _synthesize_group(
    handles: Handles, items: list[WorkItem], plans: list[WindowPlan], settings: PipelineSettings, scratch: Path
) -> list[list[tuple[int, str]]]:
    """Per item, its ``best_of`` candidates as (seed, raw audio key), every window of every candidate in
    one call: windows of many videos batch together. A candidate's window k is seeded from the
    candidate's item seed (of the generation the window was last drawn at) and k. Each candidate's audio
    is decoded and stored a piece at a time."""
    gen = handles.generator(settings)
    store = handles.store(settings)
    draws = settings.quality.best_of
    features = [[_window_features(handles, w, settings) for w in i.windows] for i in items]
    batch = Features.collate([f for fs in features for _ in range(draws) for f in fs])
    seeds, window_seeds, plan_list = [], [], []
    for item, plan in zip(items, plans, strict=True):
        redraw_regenerated_windows(item)
        for k in range(draws):
            seeds.append(item_seed(settings.seed, item.item_id, item.generation, k))
            window_seeds.append(assign_seeds(item, lambda g, i=item, k=k: item_seed(settings.seed, i.item_id, g, k)))
            plan_list.append(plan)
        # The windows record the seeds of the first candidate.
        assign_seeds(item, lambda g, i=item: item_seed(settings.seed, i.item_id, g))
    latents = sample_latents(
        gen,
        batch,
        plan_list,
        window_seeds,
        join=settings.join,
        steps=settings.steps,
        cfg_scale=settings.cfg_scale,
        precision=settings.precision,
    )
    del batch
    sr = gen.config.sample_rate
    out = []
    for n, item in enumerate(items):
        drawn = []
        for k in range(draws):
            index = n * draws + k
            pieces = decode_audio(gen, latents[index], plan_list[index], join=settings.join, precision=settings.precision)
            path = write_candidate(pieces, plan_list[index], round(item.duration_sec * sr), scratch)
            key = raw_audio_key(item, k)
            store.put_file(key, path)
            path.unlink()
            drawn.append((seeds[index], key))
        out.append(drawn)
    return out


def _pack(members: list[tuple[WorkItem, WindowPlan]], draws: int) -> list[list[tuple[WorkItem, WindowPlan]]]:
    """Split a bucket into model calls of at most WINDOWS_PER_CALL windows (an item's windows are
    sampled together, so a longer item gets a call of its own)."""
    calls: list[list[tuple[WorkItem, WindowPlan]]] = [[]]
    for item, plan in members:
        count = sum(len(p.windows) * draws for _, p in calls[-1])
        if calls[-1] and count + len(plan.windows) * draws > WINDOWS_PER_CALL:
            calls.append([])
        calls[-1].append((item, plan))
    return calls


def run_synthesis(handles: Handles, batch: Batch) -> StageResult:
    """Generate audio for the pending items of a batch, bucketed by duration and text presence."""
    settings = batch.settings
    records = LineageRecords(batch.run_id)
    buckets: dict[tuple[float, bool], list[tuple[WorkItem, WindowPlan]]] = defaultdict(list)
    for item in (i for i in batch.items if i.is_pending):
        item.result_key = item.result_key or result_key(item, settings)
        plan = item_plan(item, settings)
        # Windows share a bucket when they share a length: every long video's windows are 9 s.
        buckets[(plan.window_sec, item.text_features_key is not None)].append((item, plan))
    draws = settings.quality.best_of
    calls = [(key[0], call) for key, members in sorted(buckets.items()) for call in _pack(members, draws)]
    for duration, members in calls:
        group = [i for i, _ in members]
        started = time.time()
        try:
            with tempfile.TemporaryDirectory(dir=own_scratch(settings.scratch_dir)) as scratch:
                clips = _synthesize_group(handles, group, [p for _, p in members], settings, Path(scratch))
        except (ValueError, RuntimeError) as exc:
            # A model error (bad shapes, out of memory) fails this bucket's items, not the run.
            for item in group:
                item.fail(Stage.SYNTHESIS, f"generation failed: {exc}")
                records.attempt(
                    Stage.SYNTHESIS, item, status="failed", started_at=started, finished_at=time.time(), error=item.error
                )
            continue
        finished = time.time()
        for n, (item, drawn) in enumerate(zip(group, clips, strict=True)):
            item_started, item_finished = batch_share(started, finished, n, len(group))
            for k, (seed, key) in enumerate(drawn):
                item.candidates.append({"generation": item.generation, "candidate": k, "seed": seed, "raw_audio_key": key})
            # Until QC picks a winner, the item points at its first candidate.
            item.seed, item.raw_audio_key = drawn[0][0], item.candidates[-len(drawn)]["raw_audio_key"]
            item.next_stage = Stage.QC
            records.attempt(
                Stage.SYNTHESIS,
                item,
                status="succeeded",
                input_hash=item.result_key,
                params={
                    **settings.synthesis_params(),
                    "item_seed": item.seed,
                    "candidate_seeds": [seed for seed, _ in drawn],
                    "generation": item.generation,
                    "bucket_duration_sec": duration,
                    "batch_size": len(group),
                    "windows": windows_summary(item),
                },
                model_version=generator_version(settings),
                started_at=item_started,
                finished_at=item_finished,
            )
    return StageResult(batch.items, records)

