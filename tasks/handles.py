"""What a stage needs in the process that computes it: the artifact store and warm models.

A process (the driver with the local executor, or one Ray worker) holds one `Handles`: the models
load on first use and stay loaded across batches and runs. Stages receive it as an argument; none
of them opens lineage, which only the flow in the driver writes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from tasks.artifact_store import ArtifactStore, open_artifact_store
from tasks.config import PipelineSettings

logger = logging.getLogger(__name__)

RANDOM_WEIGHTS_WARNING = (
    "preset 'tiny' uses randomly initialised models: the audio it produces is NOISE, "
    "useful only to exercise the pipeline"
)


class Handles:
    """The store and the models of one process, opened and loaded once; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stores: dict[str, ArtifactStore] = {}
        self._generators: dict[tuple, object] = {}
        self._extractors: dict[tuple, object] = {}
        self._listening: dict[tuple, object] = {}
        self.model_loads = 0

    def store(self, settings: PipelineSettings) -> ArtifactStore:
        target = settings.store_target
        with self._lock:
            if target not in self._stores:
                self._stores[target] = open_artifact_store(settings)
            return self._stores[target]

    def generator(self, settings: PipelineSettings):
        """The warm generator for these settings (loaded on first use in this process)."""
        key = (settings.preset, settings.weights, settings.device)
        with self._lock:
            if key not in self._generators:
                self._generators[key] = _load_generator(*key)
                self.model_loads += 1
            return self._generators[key]

    def extractor(self, settings: PipelineSettings):
        """The warm feature extractor for these settings (loaded on first use in this process)."""
        key = (settings.preset, settings.clip_model, settings.t5_model, settings.synchformer_weights,
               settings.device, settings.precision)
        with self._lock:
            if key not in self._extractors:
                self._extractors[key] = _load_extractor(*key)
                self.model_loads += 1
            return self._extractors[key]


    def listening(self, settings: PipelineSettings):
        """The warm QC models (DeSync, CLAP, tagger) for these settings (loaded on first use here)."""
        from tasks.listening import load_models

        key = (settings.preset, settings.synchformer_weights, settings.clap_model, settings.tagger_model,
               settings.device, settings.precision)
        with self._lock:
            if key not in self._listening:
                self._listening[key] = load_models(*key)
                self.model_loads += 1
            return self._listening[key]


def _load_generator(preset: str, weights: str | None, device: str):
    from thinksound import Generator

    if preset == "tiny":
        logger.warning(RANDOM_WEIGHTS_WARNING)
        return Generator.from_preset("tiny", seed=0).to(device).eval()
    return Generator.from_pretrained(weights or "liuhuadai/ThinkSound", device=device).eval()


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


_this_process = Handles()


def process_handles() -> Handles:
    """The handles of this process: what an executor gives the stages it runs here."""
    return _this_process
