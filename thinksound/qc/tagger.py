"""Unwanted speech and music: an AudioSet tagger (AST) gives P(Speech) and P(Music) over time.

The real model is ``MIT/ast-finetuned-audioset-10-10-0.4593`` (527 AudioSet classes, trained with a
per-class sigmoid). The clip is resampled to 16 kHz and cut into overlapping windows; each window goes
through transformers' own ``ASTFeatureExtractor`` (Kaldi fbank, padded to the model's 10.24 s). The
class ids are looked up by their AudioSet ontology names in the model's ``id2label``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import torch
from transformers import ASTForAudioClassification, AutoFeatureExtractor

from thinksound.qc.frontend import resample, to_mono

TAGGER_SAMPLE_RATE = 16000
WATCHED_CLASSES = {"speech": "Speech", "music": "Music"}


@dataclass(frozen=True)
class TagSeries:
    """Window start times and each watched class's probability per window."""

    times_sec: tuple[float, ...]
    probabilities: dict[str, tuple[float, ...]]

    def peak(self, name: str) -> float:
        return max(self.probabilities[name])


def window_starts(samples: int, window: int, hop: int) -> list[int]:
    """Starts of windows covering the clip; the last one ends at the clip's end."""
    if samples <= window:
        return [0]
    starts = list(range(0, samples - window + 1, hop))
    if starts[-1] + window < samples:
        starts.append(samples - window)
    return starts


class AudioTagger:
    """A loaded ``ASTForAudioClassification`` with its feature extractor, in eval mode."""

    def __init__(
        self,
        *,
        model: ASTForAudioClassification,
        feature_extractor,
        device: torch.device,
        dtype: torch.dtype,
        window_sec: float = 5.12,
        hop_sec: float = 2.56,
    ) -> None:
        if feature_extractor.sampling_rate != TAGGER_SAMPLE_RATE:
            raise ValueError(f"AST feature extractor runs at {feature_extractor.sampling_rate} Hz, expected 16 kHz")
        names = {label: int(i) for i, label in model.config.id2label.items()}
        missing = [label for label in WATCHED_CLASSES.values() if label not in names]
        if missing:
            raise ValueError(f"tagger labels lack the AudioSet classes {missing}")
        self.class_ids = {key: names[label] for key, label in WATCHED_CLASSES.items()}
        self.model = model.to(device=device, dtype=dtype).eval()
        self.feature_extractor = feature_extractor
        self.device = device
        self.dtype = dtype
        self.window = round(window_sec * TAGGER_SAMPLE_RATE)
        self.hop = round(hop_sec * TAGGER_SAMPLE_RATE)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: torch.device,
        dtype: torch.dtype,
        local_files_only: bool = False,
        **windows: float,
    ) -> Self:
        src = str(name_or_path)
        return cls(
            model=ASTForAudioClassification.from_pretrained(src, dtype=dtype, local_files_only=local_files_only),
            feature_extractor=AutoFeatureExtractor.from_pretrained(src, local_files_only=local_files_only),
            device=device,
            dtype=dtype,
            **windows,
        )

    @torch.no_grad()
    def tag(self, audio: list[np.ndarray], sample_rate: int, *, windows_per_batch: int = 16) -> list[TagSeries]:
        """Per (channels, samples) clip: P(class) of each watched class in each window."""
        pieces, owners, starts = [], [], []
        for n, clip in enumerate(audio):
            mono = resample(to_mono(clip), sample_rate, TAGGER_SAMPLE_RATE)
            for start in window_starts(mono.shape[-1], self.window, self.hop):
                pieces.append(mono[start : start + self.window])
                owners.append(n)
                starts.append(start / TAGGER_SAMPLE_RATE)
        ids = list(self.class_ids.values())
        probs = []
        for i in range(0, len(pieces), windows_per_batch):
            feats = self.feature_extractor(
                pieces[i : i + windows_per_batch], sampling_rate=TAGGER_SAMPLE_RATE, return_tensors="pt"
            )
            logits = self.model(input_values=feats["input_values"].to(self.device, self.dtype)).logits
            probs.append(logits[:, ids].float().sigmoid().cpu())
        table = torch.cat(probs)
        out = []
        for n in range(len(audio)):
            rows = [i for i, o in enumerate(owners) if o == n]
            out.append(
                TagSeries(
                    times_sec=tuple(round(starts[i], 4) for i in rows),
                    probabilities={k: tuple(table[rows, j].tolist()) for j, k in enumerate(self.class_ids)},
                )
            )
        return out
