"""Synthesis stage: flow-matching generation in duration buckets, ``best_of`` seeds per item in one batch."""

from __future__ import annotations

import io
import math
import time
from collections import defaultdict

import numpy as np

from tasks.cache_keys import generation_duration, generator_version, item_seed, raw_audio_key, result_key
from tasks.config import PipelineSettings
from tasks.executors import Batch, Executor
from tasks.handles import Handles
from tasks.items import WorkItem, batch_share
from tasks.records import LineageRecords, StageResult
from tasks.retry import stage_task
from thinksound import peak_normalize, synthesize
from thinksound.features import Features, TextFeatures, VideoFeatures


def _features(handles: Handles, item: WorkItem, settings: PipelineSettings) -> Features:
    store = handles.store(settings)
    video = VideoFeatures.from_bytes(store.get_bytes(item.video_features_key))
    text = (
        TextFeatures.from_bytes(store.get_bytes(item.text_features_key)) if item.text_features_key else None
    )
    return Features(video=video, text=text)


def _npy_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, audio, allow_pickle=False)
    return buffer.getvalue()


def covering_duration(sample_rate: int, hop: int, latent_len: int, duration_sec: float) -> float:
    """The duration to ask the generator for so that its audio covers `duration_sec` entirely.

    The latent count follows predict.py's rounding, so it can fall up to half a VAE hop short (a 2.0 s
    clip gets 43 hops, 88,064 samples for 88,200): one more latent frame covers it, and the audio is
    trimmed back. The model maths stays the original's; only the requested length grows.
    """
    if latent_len * hop >= math.ceil(duration_sec * sample_rate - 1e-6):
        return duration_sec
    return duration_sec + hop / sample_rate


def _synthesize_group(
    handles: Handles, items: list[WorkItem], duration_sec: float, settings: PipelineSettings
) -> list[list[tuple[int, np.ndarray]]]:
    """Per item, its ``best_of`` candidates as (seed, audio), all generated in one batch."""
    gen = handles.generator(settings)
    draws = settings.quality.best_of
    features = [_features(handles, i, settings) for i in items]
    batch = Features.collate([f for f in features for _ in range(draws)])
    seeds = [item_seed(settings.seed, i.item_id, i.generation, k) for i in items for k in range(draws)]
    config = gen.config
    latent_len, _, _ = config.seq_lengths(duration_sec)
    audio = synthesize(
        gen,
        batch,
        duration_sec=covering_duration(config.sample_rate, config.downsampling_ratio, latent_len, duration_sec),
        seeds=seeds,
        steps=settings.steps,
        cfg_scale=settings.cfg_scale,
        precision=settings.precision,
    )
    audio = peak_normalize(audio).float().cpu().numpy()
    return [
        [
            (seeds[n * draws + k], audio[n * draws + k][:, : round(item.duration_sec * config.sample_rate)])
            for k in range(draws)
        ]
        for n, item in enumerate(items)
    ]


def run_synthesis(handles: Handles, batch: Batch) -> StageResult:
    """Generate audio for the pending items of a batch, bucketed by duration and text presence."""
    settings = batch.settings
    store = handles.store(settings)
    records = LineageRecords(batch.run_id)
    buckets: dict[tuple[float, bool], list[WorkItem]] = defaultdict(list)
    for item in (i for i in batch.items if i.is_pending):
        item.result_key = item.result_key or result_key(item, settings)
        buckets[(generation_duration(item.duration_sec), item.text_features_key is not None)].append(item)
    for (duration, _), group in sorted(buckets.items()):
        started = time.time()
        try:
            clips = _synthesize_group(handles, group, duration, settings)
        except (ValueError, RuntimeError) as exc:
            # A model error (bad shapes, out of memory) fails this bucket's items, not the run.
            for item in group:
                item.fail("synthesis", f"generation failed: {exc}")
                records.attempt(
                    "synthesis", item, status="failed", started_at=started, finished_at=time.time(), error=item.error
                )
            continue
        finished = time.time()
        for n, (item, drawn) in enumerate(zip(group, clips, strict=True)):
            item_started, item_finished = batch_share(started, finished, n, len(group))
            for k, (seed, clip) in enumerate(drawn):
                key = raw_audio_key(item, k)
                store.put_bytes(key, _npy_bytes(clip))
                item.candidates.append({"generation": item.generation, "candidate": k, "seed": seed, "raw_audio_key": key})
            # Until QC picks a winner, the item points at its first candidate.
            item.seed, item.raw_audio_key = drawn[0][0], item.candidates[-len(drawn)]["raw_audio_key"]
            item.stage = "qc"
            records.attempt(
                "synthesis",
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
                },
                model_version=generator_version(settings),
                started_at=item_started,
                finished_at=item_finished,
            )
    return StageResult(batch.items, records)


@stage_task("synthesis")
def synthesize_batch(batch_id: str, batch: Batch, executor: Executor) -> StageResult:
    """The synthesis stage over a batch (a model stage)."""
    return executor.run(run_synthesis, batch, models=True)
