"""Every content-addressed key of the pipeline, and the producer versions hashed into them.

A key changes exactly when its output would: the inputs' identity plus the version of the code and
models that make it. Versions are computed from settings alone, without loading any model.
"""

from __future__ import annotations

import math
from pathlib import Path

from tasks.config import PipelineSettings
from tasks.items import WorkItem, stable_hash
from thinksound.features.version import FEATURES_CODE_VERSION, TINY_T5_TOKENIZER
from thinksound.media import DUBBED_CONTAINER

PIPELINE_CODE_VERSION = "1"
# Bump when anything that changes a listening score changes (front ends, windows, QC model code).
QC_CODE_VERSION = "1"
# Part of every result key: bump it when synthesis output changes for the same inputs
# (2: the audio covers the whole clip, see `thinksound.windows.covering_duration`).
SYNTHESIS_CODE_VERSION = "2"
# Durations are rounded up to this grid so that similar clips share a synthesis bucket; the audio is
# trimmed back to the exact duration before publishing.
DURATION_GRID_SEC = 0.25
# The model's CLIP and sync lengths are 8 and 24 tokens per whole second: below 1 s they are empty.
MIN_GENERATION_SEC = 1.0


def generation_duration(duration_sec: float) -> float:
    """The duration the generator runs at: the segment rounded up to the bucketing grid, and at least
    1 s (shorter clips repeat their last frame, as the original does, and the audio is trimmed back)."""
    rounded = math.ceil(duration_sec / DURATION_GRID_SEC - 1e-9) * DURATION_GRID_SEC
    return max(rounded, MIN_GENERATION_SEC)


def _weights_identity(location: str | None) -> str:
    """Identify weights without reading them: a local file's size and mtime, or the hub id."""
    if location is None:
        return "default"
    path = Path(location)
    if path.exists():
        files = sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
        return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return location


def generator_version(settings: PipelineSettings) -> str:
    """Cache identity of the generator, computable before (and without) loading it."""
    if settings.preset == "tiny":
        return f"tiny/random-seed0/code{PIPELINE_CODE_VERSION}"
    return f"thinksound/{_weights_identity(settings.weights)}/code{PIPELINE_CODE_VERSION}"


def _features_code(settings: PipelineSettings) -> str:
    return f"code{PIPELINE_CODE_VERSION}.{FEATURES_CODE_VERSION}/{settings.precision}"


def video_extractor_version(settings: PipelineSettings) -> str:
    """Cache identity of the video encoders: models, weights, feature code version and precision."""
    if settings.preset == "tiny":
        return f"tiny/random-seed0/{_features_code(settings)}"
    return f"{settings.clip_model}|synchformer:{_weights_identity(settings.synchformer_weights)}/{_features_code(settings)}"


def text_encoder_version(settings: PipelineSettings) -> str:
    if settings.preset == "tiny":
        return f"tiny/random-seed0/{TINY_T5_TOKENIZER}/{_features_code(settings)}"
    return f"{settings.clip_model}|{settings.t5_model}/{_features_code(settings)}"


def listening_version(settings: PipelineSettings) -> str:
    """Cache identity of the QC models (DeSync, CLAP, tagger): weights, QC code version and precision."""
    code = f"code{PIPELINE_CODE_VERSION}.qc{QC_CODE_VERSION}/{settings.precision}"
    if settings.preset == "tiny":
        return f"tiny-qc/random-seed0/{code}"
    sync = _weights_identity(settings.synchformer_weights)
    return f"synchformer:{sync}|{settings.clap_model}|{settings.tagger_model}/{code}"


def video_features_key(item: WorkItem, settings: PipelineSettings) -> str:
    digest = stable_hash(
        item.content_hash,
        round(item.start_sec, 3),
        generation_duration(item.duration_sec),
        video_extractor_version(settings),
    )
    return f"features/video/{digest[:2]}/{digest}.safetensors"


def text_features_key(item: WorkItem, settings: PipelineSettings) -> str:
    digest = stable_hash(item.caption, item.caption_cot, text_encoder_version(settings))
    return f"features/text/{digest[:2]}/{digest}.safetensors"


def result_key(item: WorkItem, settings: PipelineSettings) -> str:
    """Identity of a published result: the video segment, its text and everything that shapes the audio."""
    return stable_hash(
        SYNTHESIS_CODE_VERSION,
        item.item_id,
        item.caption,
        item.caption_cot,
        generator_version(settings),
        video_extractor_version(settings),
        text_encoder_version(settings),
        listening_version(settings) if settings.quality.listen else None,
        settings.synthesis_params(),
        settings.quality.model_dump(),
        # A reprocessed item starts at a later generation: new seeds, so a new result.
        item.generation,
        # Per-window CoTs (manifest or MLLM): editing one changes the result.
        *([item.window_cots] if item.window_cots else []),
    )


def raw_audio_key(item: WorkItem, candidate: int) -> str:
    return f"work/audio/{item.result_key}/generation{item.generation}-candidate{candidate}.npy"


def item_seed(base_seed: int, item_id: str, generation: int, candidate: int = 0) -> int:
    """Each item's noise seed depends on the item, attempt and candidate only, never on its batch neighbours.

    The first candidate keeps the seed a single draw always had, so best-of-1 is unchanged.
    """
    parts = (base_seed, item_id, generation) if candidate == 0 else (base_seed, item_id, generation, candidate)
    return int(stable_hash(*parts, length=8), 16)


def output_keys(item: WorkItem) -> dict[str, str]:
    """Where an item's published files go: under its result key, so a rerun finds them."""
    base = f"outputs/{item.result_key[:2]}/{item.result_key}"
    return {
        "audio": f"{base}/audio.wav",
        "video": f"{base}/video.{DUBBED_CONTAINER}",
        "metrics": f"{base}/metrics.json",
    }


def published_marker(result_key: str) -> str:
    """The lineage cache key that says a result's files and rows are all written."""
    return f"published:{result_key}"


def file_hash_memo_key(path: Path) -> str:
    stat = path.stat()
    return f"file-sha256:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
