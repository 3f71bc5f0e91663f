"""Quality stage: measure and listen to every new candidate, keep each item's best so far, flag what fails.

Signal checks (duration, NaN, clipping, silence, loudness) and listening checks (DeSync, CLAP, unwanted
speech or music; ``thinksound.qc``) judge each candidate; ``thinksound.qc.selection`` documents how the
winner is chosen. Every candidate's scores go to lineage; the winner's also to the metrics table.
"""

from __future__ import annotations

import io
import math
import time

import numpy as np

from tasks import listening
from tasks.cache_keys import listening_version
from tasks.config import PipelineSettings, QualitySettings
from tasks.executors import Batch, Executor
from tasks.handles import Handles
from tasks.items import WorkItem, batch_share, jsonable
from tasks.records import LineageRecords, StageResult
from tasks.retry import stage_task
from thinksound.features import VideoFeatures
from thinksound.qc.selection import SCORE_NAMES, failed_listening, first_sentence, rank_key
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


def clap_text(item: WorkItem) -> str:
    """What CLAP compares the audio with: the caption, or else the CoT's first sentence."""
    return item.caption.strip() or first_sentence(item.caption_cot)


def _listen(handles: Handles, fresh: list[tuple[WorkItem, dict, np.ndarray]], settings: PipelineSettings) -> None:
    """Fill ``scores`` of every fresh candidate with finite audio, all through each model in one batch."""
    audible = [(item, cand, audio) for item, cand, audio in fresh if np.isfinite(audio).all()]
    if not audible:
        return
    store = handles.store(settings)
    sync: dict[str, object] = {}
    for item, _, _ in audible:
        if item.item_id not in sync:
            sync[item.item_id] = VideoFeatures.from_bytes(store.get_bytes(item.video_features_key)).sync_features
    inputs = [
        listening.Candidate(audio=audio, sync_features=sync[item.item_id], clap_text=clap_text(item))
        for item, _, audio in audible
    ]
    scored = listening.listen(inputs, SAMPLE_RATE, handles.listening(settings))
    for (_, cand, _), scores in zip(audible, scored, strict=True):
        cand["listening"] = scores.pop("details")
        cand["scores"] = scores


def _rank(cand: dict, limits: QualityThresholds) -> tuple:
    severity, signal_tiebreak = badness(cand["metrics"], limits)
    gates, desync, clap, order = rank_key(len(cand["reasons"]) + severity, cand.get("scores", {}), cand["order"])
    return (gates, desync, clap, signal_tiebreak, order)


def _assess(handles: Handles, items: list[WorkItem], settings: PipelineSettings) -> None:
    """Judge every candidate not judged yet, then point each item at its best candidate."""
    limits = thresholds(settings.quality)
    listen_limits = listening.thresholds(settings)
    fresh = []
    for item in items:
        for order, cand in enumerate(item.candidates):
            cand["order"] = order
            if "metrics" not in cand:
                fresh.append((item, cand, load_audio(handles, cand["raw_audio_key"], settings)))
    for item, cand, audio in fresh:
        cand["metrics"] = measure(audio, SAMPLE_RATE, expected_duration_sec=item.duration_sec, thresholds=limits)
        # True peak and clipping are judged after loudness normalisation, at publish time; here the
        # generator's raw (peak-normalised) output is judged for what the model itself got wrong.
        cand["reasons"] = [r for r in failed_checks(cand["metrics"], limits) if not r.startswith("true peak")]
    if settings.quality.listen:
        _listen(handles, fresh, settings)
        for item, cand, _ in fresh:
            text = f"{item.caption}\n{item.caption_cot}"
            cand["reasons"] += failed_listening(cand.get("scores", {}), text, listen_limits)
    for item in items:
        best = min(item.candidates, key=lambda c: _rank(c, limits))
        item.raw_audio_key = best["raw_audio_key"]
        item.seed = best["seed"]
        item.metrics = dict(best["metrics"])
        item.scores = dict(best.get("scores", {}))
        item.rejection_reasons = list(best["reasons"])


def candidate_summary(cand: dict) -> dict[str, object]:
    """One candidate as lineage and metrics.json record it."""
    return {
        "generation": cand["generation"],
        "candidate": cand["candidate"],
        "seed": cand["seed"],
        "scores": cand.get("scores", {}),
        "reasons": cand["reasons"],
        "listening": cand.get("listening", {}),
    }


def chosen(item: WorkItem) -> dict:
    return next(c for c in item.candidates if c["raw_audio_key"] == item.raw_audio_key)


def score_metrics(item: WorkItem, settings: PipelineSettings) -> dict[str, float | None]:
    """The winner's scores and how it was chosen, as rows of the metrics table."""
    win = chosen(item)
    return {
        **{name: item.scores.get(name, math.nan) for name in SCORE_NAMES},
        "best_of": settings.quality.best_of,
        "chosen_generation": win["generation"],
        "chosen_candidate": win["candidate"],
    }


def run_quality(handles: Handles, batch: Batch) -> StageResult:
    """Judge the new candidates of each pending item and keep its best candidate so far."""
    settings = batch.settings
    records = LineageRecords(batch.run_id)
    pending = [i for i in batch.items if i.is_pending and i.stage == "qc"]
    started = time.time()
    _assess(handles, pending, settings)
    finished = time.time()
    for n, item in enumerate(pending):
        win = chosen(item)
        item_started, item_finished = batch_share(started, finished, n, len(pending))
        records.attempt(
            "qc",
            item,
            status="rejected" if item.rejection_reasons else "succeeded",
            input_hash=item.raw_audio_key,
            params={**settings.quality.model_dump(), "generation": item.generation},
            model_version=listening_version(settings) if settings.quality.listen else None,
            started_at=item_started,
            finished_at=item_finished,
            error="; ".join(item.rejection_reasons) or None,
            details=jsonable(
                {
                    "metrics": item.metrics,
                    "scores": item.scores,
                    "chosen": {k: win[k] for k in ("generation", "candidate", "seed")},
                    "candidates": [candidate_summary(c) for c in item.candidates],
                }
            ),
        )
        if settings.quality.listen:
            records.metrics[item.item_id] = jsonable(score_metrics(item, settings))
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
