"""MetaCLIP image and caption features through transformers' ``CLIPModel``, as the original uses them.

- image: the vision tower's pooled output (post-layernorm CLS) through ``visual_projection``, not
  L2-normalised, one vector per frame;
- caption: ``last_hidden_state`` after the final layer norm (77 tokens, padded to max_length) and the
  pooled end-of-text state through ``text_projection``.
"""

from __future__ import annotations

import torch
from transformers import CLIPModel

from thinksound.features.pretrained import PretrainedEncoder
from thinksound.features.record import TEXT_LENGTH


class MetaClipEncoder(PretrainedEncoder):
    """A loaded ``CLIPModel`` plus its tokenizer, on one device and dtype."""

    model_class = CLIPModel
    model: CLIPModel

    @property
    def image_dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def text_dim(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor, *, batch_size: int = 128) -> torch.Tensor:
        """(N, 3, 224, 224) normalised frames -> (N, projection_dim) float32 on CPU."""
        outs = []
        for i in range(0, pixels.shape[0], batch_size):
            x = pixels[i : i + batch_size].to(device=self.device, dtype=self.dtype, non_blocking=True)
            pooled = self.model.vision_model(pixel_values=x).pooler_output
            outs.append(self.model.visual_projection(pooled).float().cpu())
        if not outs:
            return torch.empty(0, self.image_dim)
        return torch.cat(outs)

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> (B, 77, hidden) token states and (B, projection_dim) pooled projection, float32 CPU."""
        enc = self.tokenizer(
            texts, padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt"
        ).to(self.device)
        out = self.model.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        pooled = self.model.text_projection(out.pooler_output)
        return out.last_hidden_state.float().cpu(), pooled.float().cpu()
