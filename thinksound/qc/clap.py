"""CLAP score: cosine similarity between a clip's audio embedding and its text's, with transformers' CLAP.

The real model is ``laion/larger_clap_general``; its processor expects 48 kHz mono, so the clip is
resampled with a proper anti-aliased polyphase filter first. Clips longer than the model's window are
cut to their first ``max_length_s`` seconds: the processor would otherwise crop at a random place, and
a score must be the same on every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoTokenizer, ClapModel

from thinksound.qc.frontend import resample, to_mono

CLAP_SAMPLE_RATE = 48000


class ClapScorer:
    """A loaded ``ClapModel`` with its feature extractor and tokenizer, in eval mode."""

    def __init__(self, *, model: ClapModel, feature_extractor, tokenizer, device: torch.device, dtype: torch.dtype):
        if feature_extractor.sampling_rate != CLAP_SAMPLE_RATE:
            raise ValueError(f"CLAP feature extractor runs at {feature_extractor.sampling_rate} Hz, expected 48 kHz")
        self.model = model.to(device=device, dtype=dtype).eval()
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, device: torch.device, dtype: torch.dtype, local_files_only: bool = False
    ) -> Self:
        src = str(name_or_path)
        return cls(
            model=ClapModel.from_pretrained(src, dtype=dtype, local_files_only=local_files_only),
            feature_extractor=AutoFeatureExtractor.from_pretrained(src, local_files_only=local_files_only),
            tokenizer=AutoTokenizer.from_pretrained(src, local_files_only=local_files_only),
            device=device,
            dtype=dtype,
        )

    def features(self, audio: list[np.ndarray], sample_rate: int) -> dict[str, torch.Tensor]:
        """The processor's inputs for (channels, samples) clips at ``sample_rate``."""
        limit = int(self.feature_extractor.max_length_s * CLAP_SAMPLE_RATE)
        clips = [resample(to_mono(a), sample_rate, CLAP_SAMPLE_RATE)[:limit] for a in audio]
        return self.feature_extractor(clips, sampling_rate=CLAP_SAMPLE_RATE, return_tensors="pt")

    @torch.no_grad()
    def score(self, audio: list[np.ndarray], sample_rate: int, texts: list[str]) -> list[float]:
        """One cosine similarity in [-1, 1] per (clip, text) pair; the batch runs as one forward each."""
        if len(audio) != len(texts):
            raise ValueError(f"{len(audio)} clips for {len(texts)} texts")
        feats = self.features(audio, sample_rate)
        # Best-of-N candidates share their item's text: each distinct text is encoded once.
        unique = list(dict.fromkeys(texts))
        tokens = self.tokenizer(unique, padding=True, truncation=True, return_tensors="pt").to(self.device)
        a = self.model.get_audio_features(
            input_features=feats["input_features"].to(self.device, self.dtype),
            is_longer=feats["is_longer"].to(self.device) if "is_longer" in feats else None,
        ).pooler_output
        t = self.model.get_text_features(**tokens).pooler_output[[unique.index(x) for x in texts]]
        return torch.nn.functional.cosine_similarity(a.float(), t.float(), dim=-1).tolist()
