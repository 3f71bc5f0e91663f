"""Process-wide handles: models stay warm across batches, lineage and store are opened once.

Prefect runs every task of a flow run in the same worker process, so a module-level cache is what
keeps the generator and the feature extractors loaded from one batch to the next.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from storage import ArtifactStore, Lineage, open_store
from tasks.config import PipelineSettings
from tasks.s3_access import is_s3_uri, s3_config
from thinksound.features.version import FEATURES_CODE_VERSION, TINY_T5_TOKENIZER

logger = logging.getLogger(__name__)

PIPELINE_CODE_VERSION = "1"
RANDOM_WEIGHTS_WARNING = (
    "preset 'tiny' uses randomly initialised models: the audio it produces is NOISE, "
    "useful only to exercise the pipeline"
)

_lock = threading.Lock()
_lineages: dict[Path, Lineage] = {}
_stores: dict[str, ArtifactStore] = {}


def lineage(settings: PipelineSettings) -> Lineage:
    """The run's lineage database; DuckDB allows one writer per file, so one handle per process."""
    path = settings.lineage_path
    with _lock:
        if path not in _lineages:
            path.parent.mkdir(parents=True, exist_ok=True)
            _lineages[path] = Lineage.open(path)
        return _lineages[path]


def close_lineage(settings: PipelineSettings) -> None:
    with _lock:
        handle = _lineages.pop(settings.lineage_path, None)
    if handle is not None:
        handle.close()


def store(settings: PipelineSettings) -> ArtifactStore:
    target = settings.store_target
    with _lock:
        if target not in _stores:
            _stores[target] = open_store(target, s3=s3_config(settings.s3) if is_s3_uri(target) else None)
        return _stores[target]


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


def _features_code() -> str:
    return f"code{PIPELINE_CODE_VERSION}.{FEATURES_CODE_VERSION}/{{precision}}"


def video_extractor_version(settings: PipelineSettings) -> str:
    """Cache identity of the video encoders: models, weights, feature code version and precision."""
    code = _features_code().format(precision=settings.precision)
    if settings.preset == "tiny":
        return f"tiny/random-seed0/{code}"
    return f"{settings.clip_model}|synchformer:{_weights_identity(settings.synchformer_weights)}/{code}"


def text_encoder_version(settings: PipelineSettings) -> str:
    code = _features_code().format(precision=settings.precision)
    if settings.preset == "tiny":
        return f"tiny/random-seed0/{TINY_T5_TOKENIZER}/{code}"
    return f"{settings.clip_model}|{settings.t5_model}/{code}"


@cache
def _load_generator(preset: str, weights: str | None, device: str):
    from thinksound import Generator

    if preset == "tiny":
        logger.warning(RANDOM_WEIGHTS_WARNING)
        return Generator.from_preset("tiny", seed=0).to(device).eval()
    return Generator.from_pretrained(weights or "liuhuadai/ThinkSound", device=device).eval()


@cache
def _load_extractor(
    preset: str, clip_model: str, t5_model: str, synchformer: str | None, device: str, precision: str
):
    from thinksound.features import FeatureExtractor

    if preset == "tiny":
        return FeatureExtractor.from_preset("tiny", device=device, precision=precision, seed=0)
    return FeatureExtractor.from_pretrained(
        clip=clip_model,
        t5=t5_model,
        synchformer=synchformer or "liuhuadai/ThinkSound",
        device=device,
        precision=precision,
    )


@contextlib.contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """No tqdm bars from transformers or the hub ("Writing model shards", "Loading weights") while the
    block runs: they fill worker logs, and progress is shown by the CLI's bar and the progress artifact."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def generator(settings: PipelineSettings):
    """The warm generator for these settings (loaded on first use in this process)."""
    with _lock:
        return _load_generator(settings.preset, settings.weights, settings.device)


def extractor(settings: PipelineSettings):
    """The warm feature extractor for these settings (loaded on first use in this process)."""
    with _lock:
        return _load_extractor(
            settings.preset,
            settings.clip_model,
            settings.t5_model,
            settings.synchformer_weights,
            settings.device,
            settings.precision,
        )
