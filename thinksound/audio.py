"""Audio post-processing: peak normalisation and 16-bit conversion.

The original divides the whole batch by its single loudest sample, so an item's level depends on
which batch it landed in. ``peak_normalize`` normalises each item on its own by default;
``per_item=False`` reproduces the original.
"""

from __future__ import annotations

import torch
from torch import Tensor


def peak_normalize(audio: Tensor, *, per_item: bool = True) -> Tensor:
    """Divide (B, C, L) audio by its peak |x|: per item, or over the whole batch as the original.

    Silent items stay silent (the original would divide by zero).
    """
    audio = audio.to(torch.float32)
    if per_item:
        peak = audio.abs().amax(dim=tuple(range(1, audio.ndim)), keepdim=True)
    else:
        peak = audio.abs().max()
    return audio / torch.where(peak > 0, peak, torch.ones_like(peak))


def to_int16(audio: Tensor) -> Tensor:
    """[-1, 1] float audio -> int16 as the original: clamp, times 32767, truncate toward zero."""
    return audio.clamp(-1, 1).mul(32767).to(torch.int16)
