"""Quality stage: measure and listen to every new candidate, keep each item's best so far, flag what fails.

Signal checks (duration, NaN, clipping, silence, loudness) and listening checks (DeSync, CLAP, unwanted
speech or music; ``thinksound.qc``) judge each candidate; ``thinksound.qc.selection`` documents how the
winner is chosen. Every candidate's scores go to lineage; the winner's also to the metrics table.
"""

from __future__ import annotations

import math
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from storage import Stage
from tasks import listening
from tasks.cache_keys import listening_version
from tasks.config import PipelineSettings, QualitySettings
from tasks.executors import Batch
from tasks.handles import Handles
from tasks.items import WorkItem, batch_share, jsonable
from tasks.records import LineageRecords, StageResult
from tasks.scratch import own_scratch
from tasks.windows import item_plan
from thinksound.features import VideoFeatures
from thinksound.qc.selection import SCORE_NAMES, failed_listening, first_sentence, rank_key
from thinksound.quality import QualityThresholds, badness, failed_checks
from thinksound.seams import seam_jumps_db, window_silence_ratios
from thinksound.track_file import TrackFile
from thinksound.track_quality import measure_track, resample_mono

SAMPLE_RATE = 44100
# The rate DeSync and the speech/music tagger hear (`thinksound.qc.tagger.TAGGER_SAMPLE_RATE`).
LISTENING_RATE = 16000


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


def fetch_track(handles: Handles, key: str, settings: PipelineSettings, folder: Path) -> TrackFile:
    """A candidate's raw audio, downloaded into `folder` to be read a chunk at a time."""
    return TrackFile(handles.store(settings).get_file(key, folder / f"{uuid.uuid4().hex}.npy"))


def clap_text(item: WorkItem) -> str:
    """What CLAP compares the audio with: the caption, or else the CoT's first sentence."""
    return item.caption.strip() or first_sentence(item.caption_cot)


def _listen(handles: Handles, fresh: list[tuple[WorkItem, dict, TrackFile]], settings: PipelineSettings) -> None:
    """Fill ``scores`` of every fresh candidate with finite audio, all through each model in one batch."""
    audible = [(item, cand, track) for item, cand, track in fresh if cand["metrics"]["non_finite_ratio"] == 0]
    if not audible:
        return
    store = handles.store(settings)
    models = handles.listening(settings)
    sync: dict[str, object] = {}
    for item, _, _ in audible:
        if item.item_id not in sync:
            sync[item.item_id] = VideoFeatures.from_bytes(store.get_bytes(item.video_features_key)).sync_features
    # CLAP hears the start of a clip; a second more feeds its resampler's filter as the whole track would.
    clap_samples = math.ceil((listening.clap_seconds(models) + 1.0) * SAMPLE_RATE)
    inputs = [
        listening.Candidate(
            clap_audio=track.read(0, clap_samples),
            audio16=resample_mono(track, SAMPLE_RATE, LISTENING_RATE),
            sync_features=sync[item.item_id],
            clap_text=clap_text(item),
        )
        for item, _, track in audible
    ]
    scored = listening.listen(inputs, SAMPLE_RATE, models)
    for (_, cand, _), scores in zip(audible, scored, strict=True):
        cand["listening"] = scores.pop("details")
        cand["scores"] = scores


def _rank(cand: dict, limits: QualityThresholds) -> tuple:
    severity, signal_tiebreak = badness(cand["metrics"], limits)
    gates, desync, clap, order = rank_key(len(cand["reasons"]) + severity, cand.get("scores", {}), cand["order"])
    return (gates, desync, clap, signal_tiebreak, order)


def _check_windows(
    item: WorkItem, audio: np.ndarray | TrackFile, metrics: dict, settings: PipelineSettings
) -> list[str]:
    """Seams and windows of a joined track: records each seam's level jump, marks the windows a
    regeneration should redraw, and returns the seam failures."""
    plan = item_plan(item, settings)
    hop_sec = plan.hop / plan.sample_rate
    fades = [(a * hop_sec, b * hop_sec) for a, b in plan.fades]
    jumps = seam_jumps_db(audio, SAMPLE_RATE, fades)
    limit = settings.quality.max_seam_jump_db
    item.seams = [
        {"index": n, "at_sec": round(plan.seam_sec(n), 4), "level_jump_db": round(jump, 3)}
        for n, jump in enumerate(jumps)
    ]
    metrics["max_seam_jump_db"] = max((abs(j) for j in jumps), default=0.0)
    bounds = [0.0, *(plan.seam_sec(n) for n in range(len(fades))), item.duration_sec]
    silence = window_silence_ratios(
        audio,
        SAMPLE_RATE,
        list(zip(bounds[:-1], bounds[1:], strict=True)),
        threshold_dbfs=settings.quality.silence_threshold_dbfs,
    )
    failed = {n for n, ratio in enumerate(silence) if ratio > settings.quality.max_silence_ratio}
    seam_reasons = []
    for n, jump in enumerate(jumps):
        if abs(jump) > limit:
            failed.add(n + 1)
            seam_reasons.append(f"seam {n} at {plan.seam_sec(n):.2f} s: level jumps {jump:+.1f} dB (max {limit:g} dB)")
    # A failure the windows explain is local: only those windows are redrawn. Otherwise all are.
    local = bool(failed) and len(failed) < len(item.windows)
    for window in item.windows:
        window["failed"] = local and window["index"] in failed
    return seam_reasons


def _assess(handles: Handles, items: list[WorkItem], settings: PipelineSettings) -> None:
    """Judge every candidate not judged yet, then point each item at its best candidate."""
    limits = thresholds(settings.quality)
    listen_limits = listening.thresholds(settings)
    with tempfile.TemporaryDirectory(dir=own_scratch(settings.scratch_dir)) as scratch:
        fresh = []
        for item in items:
            for order, cand in enumerate(item.candidates):
                cand["order"] = order
                if "metrics" not in cand:
                    fresh.append((item, cand, fetch_track(handles, cand["raw_audio_key"], settings, Path(scratch))))
        for item, cand, track in fresh:
            cand["metrics"] = measure_track(
                track, SAMPLE_RATE, expected_duration_sec=item.duration_sec, thresholds=limits
            )
            # True peak and clipping are judged after loudness normalisation, at publish time; here the
            # generator's raw (peak-normalised) output is judged for what the model itself got wrong.
            cand["reasons"] = [r for r in failed_checks(cand["metrics"], limits) if not r.startswith("true peak")]
            if len(item.windows) > 1:
                cand["reasons"] += _check_windows(item, track, cand["metrics"], settings)
                cand["seams"] = item.seams
                cand["failed_windows"] = [w["index"] for w in item.windows if w.get("failed")]
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
        item.seams = list(best.get("seams") or [])
        for window in item.windows:
            window["failed"] = window["index"] in best.get("failed_windows", [])


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
    pending = [i for i in batch.items if i.is_pending and i.next_stage == Stage.QC]
    started = time.time()
    _assess(handles, pending, settings)
    finished = time.time()
    for n, item in enumerate(pending):
        win = chosen(item)
        item_started, item_finished = batch_share(started, finished, n, len(pending))
        records.attempt(
            Stage.QC,
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
            item.next_stage = Stage.PUBLISH
