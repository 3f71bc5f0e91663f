"""Quality stage: measure each generated clip, keep the best of its generations, flag what fails."""

from __future__ import annotations

import io
import time

import numpy as np

from tasks.config import PipelineSettings, QualitySettings
from tasks.executors import Batch, Executor
from tasks.handles import Handles
from tasks.items import WorkItem
from tasks.records import LineageRecords, StageResult
from tasks.retry import stage_task
from thinksound.quality import QualityThresholds, badness, failed_checks, measure

SAMPLE_RATE = 44100


def thresholds(settings: QualitySettings) -> QualityThresholds:
    return QualityThresholds(
        duration_tolerance_sec=settings.duration_tolerance_sec,
        max_clipping_ratio=settings.max_clipping_ratio,
        clipping_level=settings.clipping_level,
        max_silence_ratio=settings.max_silence_ratio,
        silence_threshold_dbfs=settings.silence_threshold_dbfs,
        min_loudness_lufs=settings.min_loudness_lufs,
        max_true_peak_dbtp=settings.max_true_peak_dbtp,
    )


def load_audio(handles: Handles, key: str, settings: PipelineSettings) -> np.ndarray:
    return np.load(io.BytesIO(handles.store(settings).get_bytes(key)), allow_pickle=False)


def _assess(handles: Handles, item: WorkItem, settings: PipelineSettings) -> None:
    limits = thresholds(settings.quality)
    audio = load_audio(handles, item.raw_audio_key, settings)
    # True peak and clipping are judged after loudness normalisation, at publish time; here the
    # generator's raw (peak-normalised) output is judged for what the model itself got wrong.
    metrics = measure(audio, SAMPLE_RATE, expected_duration_sec=item.duration_sec, thresholds=limits)
    reasons = [r for r in failed_checks(metrics, limits) if not r.startswith("true peak")]
    item.candidates.append(
        {
            "generation": item.generation,
            "raw_audio_key": item.raw_audio_key,
            "metrics": metrics,
            "reasons": reasons,
        }
    )
    best = min(item.candidates, key=lambda c: (badness(c["metrics"], limits), c["generation"]))
    item.raw_audio_key = best["raw_audio_key"]
    item.metrics = dict(best["metrics"])
    item.rejection_reasons = list(best["reasons"])


def run_quality(handles: Handles, batch: Batch) -> StageResult:
    """Measure the newest generation of each pending item and keep its best generation so far."""
    settings = batch.settings
    records = LineageRecords(batch.run_id)
    for item in (i for i in batch.items if i.is_pending and i.stage == "qc"):
        started = time.time()
        _assess(handles, item, settings)
        records.attempt(
            "qc",
            item,
            status="rejected" if item.rejection_reasons else "succeeded",
            input_hash=item.raw_audio_key,
            params={**settings.quality.model_dump(), "generation": item.generation},
            started_at=started,
            finished_at=time.time(),
            error="; ".join(item.rejection_reasons) or None,
            details={"metrics": item.candidates[-1]["metrics"]},
        )
    return StageResult(batch.items, records)


@stage_task("quality")
def check_quality(batch_id: str, batch: Batch, executor: Executor) -> StageResult:
    """The quality checks over a batch (with the model workers: QC models are model stages)."""
    return executor.run(run_quality, batch, models=True)


def needs_regeneration(item: WorkItem, settings: PipelineSettings) -> bool:
    return (
        item.is_pending
        and bool(item.rejection_reasons)
        and item.generation < settings.quality.max_regenerations
    )


def settle(items: list[WorkItem]) -> None:
    """After the last generation: items whose best attempt still fails are rejected."""
    for item in items:
        if item.is_pending and item.rejection_reasons:
            item.reject(item.rejection_reasons)
        elif item.is_pending:
            item.stage = "publish"
