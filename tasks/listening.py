"""The listening QC models of a worker (DeSync, CLAP, speech/music tagger): loaded once, run batched.

Like the generator and the feature extractors, the models stay warm in the worker process across
batches. Every candidate of a batch goes through each model together.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch

from tasks.config import PipelineSettings
from thinksound.qc.selection import ListeningThresholds

logger = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ListeningModels:
    sync: object  # thinksound.qc.SyncScorer
    clap: object  # thinksound.qc.clap.ClapScorer
    tagger: object  # thinksound.qc.tagger.AudioTagger
    keepalive: object | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Candidate:
    """What the models need of one candidate: its audio, its video's sync features and its texts."""

    clap_audio: np.ndarray  # (channels, samples) at the generator's rate: at least CLAP's first seconds
    audio16: np.ndarray  # (samples,) the whole track's channel mean at 16 kHz (`frontend.resample`)
    sync_features: torch.Tensor  # (S*8, D) cached Synchformer visual features
    clap_text: str


def clap_seconds(m: ListeningModels) -> float:
    """How much of a clip's start CLAP listens to."""
    return float(m.clap.feature_extractor.max_length_s)


def thresholds(settings: PipelineSettings) -> ListeningThresholds:
    q = settings.quality
    return ListeningThresholds(
        max_speech_prob=q.max_speech_prob,
        max_music_prob=q.max_music_prob,
        max_desync_sec=q.max_desync_sec,
        min_clap=q.min_clap,
        speech_words=q.speech_words,
        music_words=q.music_words,
    )


def load_models(
    preset: str, synchformer: str | None, clap: str, tagger: str, device: str, precision: str
) -> ListeningModels:
    """Load the three QC models (``tasks.handles.Handles.listening`` keeps them warm per process)."""
    from thinksound.qc import load_sync_scorer  # noqa: PLC0415 - transformers only when QC runs
    from thinksound.qc.clap import ClapScorer  # noqa: PLC0415
    from thinksound.qc.tagger import AudioTagger  # noqa: PLC0415

    dev, dtype = torch.device(device), _DTYPES[precision]
    keepalive = None
    local = False
    if preset == "tiny":
        from thinksound.qc.tiny import build_tiny_qc  # noqa: PLC0415

        keepalive = tempfile.TemporaryDirectory(prefix="thinksound-tiny-qc-")
        paths = build_tiny_qc(keepalive.name, seed=0)
        synchformer, clap, tagger, local = str(paths.synchformer), str(paths.clap), str(paths.tagger), True
    return ListeningModels(
        sync=load_sync_scorer(
            synchformer or "liuhuadai/ThinkSound", device=dev, dtype=dtype, local_files_only=local
        ),
        clap=ClapScorer.from_pretrained(clap, device=dev, dtype=dtype, local_files_only=local),
        tagger=AudioTagger.from_pretrained(tagger, device=dev, dtype=dtype, local_files_only=local),
        keepalive=keepalive,
    )


def listen(candidates: list[Candidate], sample_rate: int, m: ListeningModels) -> list[dict[str, object]]:
    """Scores of every candidate: ``desync_sec``, ``clap``, ``speech``, ``music``, plus their details."""
    from thinksound.qc.tagger import TAGGER_SAMPLE_RATE  # noqa: PLC0415

    if not candidates:
        return []
    audio16 = [torch.from_numpy(c.audio16) for c in candidates]
    sync = m.sync.score([c.sync_features for c in candidates], audio16)
    clap = m.clap.score([c.clap_audio for c in candidates], sample_rate, [c.clap_text for c in candidates])
    tags = m.tagger.tag([c.audio16 for c in candidates], TAGGER_SAMPLE_RATE)
    return [
        {
            "desync_sec": s.desync_sec,
            "clap": c,
            "speech": t.peak("speech"),
            "music": t.peak("music"),
            "details": {
                "sync_offsets_sec": list(s.offsets_sec),
                "sync_confidences": list(s.confidences),
                "sync_looped": s.looped,
                "tag_times_sec": list(t.times_sec),
                "speech_over_time": list(t.probabilities["speech"]),
                "music_over_time": list(t.probabilities["music"]),
            },
        }
        for s, c, t in zip(sync, clap, tags, strict=True)
    ]
