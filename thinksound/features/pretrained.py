"""What the transformers-backed encoders share: a model and its tokenizer, on one device and dtype."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase


class PretrainedEncoder:
    """A loaded transformers model (of `model_class`) plus its tokenizer, in eval mode."""

    model_class: ClassVar[type[PreTrainedModel]]

    def __init__(
        self, *, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.model = model.to(device=device, dtype=dtype).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, device: torch.device, dtype: torch.dtype, local_files_only: bool = False
    ) -> Self:
        """Load from a local directory or a hub id (weights through transformers, never a pickle)."""
        model = cls.model_class.from_pretrained(str(name_or_path), dtype=dtype, local_files_only=local_files_only)
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=local_files_only)
        return cls(model=model, tokenizer=tokenizer, device=device, dtype=dtype)
