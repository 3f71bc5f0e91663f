"""Synthesis stage: flow-matching generation in duration buckets, one seed per item."""

from __future__ import annotations

import io
import time
from collections import defaultdict

import numpy as np

from tasks import runtime
from tasks.config import PipelineSettings
from tasks.ingest import generation_duration
from tasks.items import WorkItem, attempt, batch_share, stable_hash
from tasks.retry import stage_task
from thinksound import peak_normalize, synthesize
from thinksound.features import Features, TextFeatures, VideoFeatures


def item_seed(base_seed: int, item_id: str, generation: int) -> int:
    """Each item's noise seed depends on the item and attempt only, never on its batch neighbours."""
    return int(stable_hash(base_seed, item_id, generation, length=8), 16)


def result_key(item: WorkItem, settings: PipelineSettings) -> str:
    """Identity of a published result: the video segment, its text and everything that shapes the audio."""
    return stable_hash(
        item.item_id,
        item.caption,
        item.caption_cot,
        runtime.generator_version(settings),
        runtime.video_extractor_version(settings),
        runtime.text_encoder_version(settings),
        settings.synthesis_params(),
        settings.quality.model_dump(),
    )


def _features(item: WorkItem, settings: PipelineSettings) -> Features:
    store = runtime.store(settings)
    video = VideoFeatures.from_bytes(store.get_bytes(item.video_features_key))
    text = (
        TextFeatures.from_bytes(store.get_bytes(item.text_features_key)) if item.text_features_key else None
    )
    return Features(video=video, text=text)


def _npy_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, audio, allow_pickle=False)
    return buffer.getvalue()


def _synthesize_group(
    items: list[WorkItem], duration_sec: float, settings: PipelineSettings
) -> list[np.ndarray]:
    gen = runtime.generator(settings)
    batch = Features.collate([_features(i, settings) for i in items])
    for item in items:
        item.seed = item_seed(settings.seed, item.item_id, item.generation)
    audio = synthesize(
        gen,
        batch,
        duration_sec=duration_sec,
        seeds=[i.seed for i in items],
        steps=settings.steps,
        cfg_scale=settings.cfg_scale,
        precision=settings.precision,
    )
    audio = peak_normalize(audio).float().cpu().numpy()
    sample_rate = gen.config.sample_rate
    return [a[:, : round(i.duration_sec * sample_rate)] for a, i in zip(audio, items, strict=True)]


@stage_task("synthesis")
def synthesize_batch(
    batch_id: str, items: list[WorkItem], settings: PipelineSettings, run_id: str
) -> list[WorkItem]:
    """Generate audio for the pending items of a batch, bucketed by duration and text presence."""
    store = runtime.store(settings)
    buckets: dict[tuple[float, bool], list[WorkItem]] = defaultdict(list)
    for item in (i for i in items if i.is_pending):
        item.result_key = item.result_key or result_key(item, settings)
        buckets[(generation_duration(item.duration_sec), item.text_features_key is not None)].append(item)
    attempts = []
    for (duration, _), group in sorted(buckets.items()):
        started = time.time()
        try:
            clips = _synthesize_group(group, duration, settings)
        except (ValueError, RuntimeError) as exc:
            # A model error (bad shapes, out of memory) fails this bucket's items, not the run.
            for item in group:
                item.fail("synthesis", f"generation failed: {exc}")
                attempts.append(
                    attempt(
                        run_id,
                        "synthesis",
                        item,
                        status="failed",
                        started_at=started,
                        finished_at=time.time(),
                        error=item.error,
                    )
                )
            continue
        finished = time.time()
        for n, (item, clip) in enumerate(zip(group, clips, strict=True)):
            item_started, item_finished = batch_share(started, finished, n, len(group))
            item.raw_audio_key = f"work/audio/{item.result_key}/generation{item.generation}.npy"
            store.put_bytes(item.raw_audio_key, _npy_bytes(clip))
            item.stage = "qc"
            attempts.append(
                attempt(
                    run_id,
                    "synthesis",
                    item,
                    status="succeeded",
                    input_hash=item.result_key,
                    params={
                        **settings.synthesis_params(),
                        "item_seed": item.seed,
                        "generation": item.generation,
                        "bucket_duration_sec": duration,
                        "batch_size": len(group),
                    },
                    model_version=runtime.generator_version(settings),
                    started_at=item_started,
                    finished_at=item_finished,
                )
            )
    runtime.lineage(settings).record_attempts(attempts)
    return items
