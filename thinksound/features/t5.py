"""T5 v1.1 encoder states of the chain-of-thought text, with the truncation made visible.

The original tokenises with max_length 77, padding "max_length" and silent truncation, and keeps the
encoder's ``last_hidden_state`` for every position (padded ones included). We do the same and also
report how many tokens the text had before truncation, so the CoT stage can react.
"""

from __future__ import annotations

import torch
from transformers import T5EncoderModel

from thinksound.features.pretrained import PretrainedEncoder
from thinksound.features.record import TEXT_LENGTH


class T5TextEncoder(PretrainedEncoder):
    """A loaded ``T5EncoderModel`` plus its tokenizer, on one device and dtype."""

    model_class = T5EncoderModel
    model: T5EncoderModel

    @property
    def dim(self) -> int:
        return int(self.model.config.d_model)

    def count_tokens(self, text: str) -> int:
        """Tokens the text needs, end-of-sequence token included, before any truncation."""
        return len(self.tokenizer(text, truncation=False, verbose=False)["input_ids"])

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, list[int]]:
        """Texts -> (B, 77, d_model) float32 CPU states, and each text's untruncated token count."""
        counts = [self.count_tokens(t) for t in texts]
        enc = self.tokenizer(
            texts, padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt"
        ).to(self.device)
        out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        return out.last_hidden_state.float().cpu(), counts
