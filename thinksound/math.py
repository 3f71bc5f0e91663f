"""Pure tensor math of the MM-DiT: attention, RoPE tables, timestep frequencies, resampling.

Several of these must be computed in exactly the original's float32 order of operations, because the
model is sensitive to last-ulp differences (timestep frequencies reach 1e4 rad; nearest-exact indices
flip with float32 rounding). The comments say where.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rope_table(length: int, head_dim: int, *, freq_scaling: float = 1.0, theta: float = 10000.0) -> Tensor:
    """Rotations (L, Dh/2, 2) holding (cos, sin) per position and channel pair.

    Equal to the original's 2x2 matrices [[cos, -sin], [sin, cos]] with less storage.
    """
    pos = torch.arange(length, dtype=torch.float32)
    # Same float32 steps as the original: a power of a scalar by a float32 tensor, then the scaling.
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    freqs = freqs * freq_scaling
    angles = pos[:, None] * freqs[None, :]
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)


def rope_identity(length: int, head_dim: int) -> Tensor:
    """Rotations by zero, for tokens without RoPE inside a joint sequence (text)."""
    return torch.stack([torch.ones(length, head_dim // 2), torch.zeros(length, head_dim // 2)], dim=-1)


def rope_matrices(table: Tensor) -> Tensor:
    """The original's (1, L, Dh/2, 2, 2) layout of a rope_table, for comparisons."""
    cos, sin = table.unbind(-1)
    return torch.stack([cos, -sin, sin, cos], dim=-1).view(1, *table.shape[:2], 2, 2)


def apply_rope(x: Tensor, table: Tensor) -> Tensor:
    """Rotate adjacent channel pairs (2i, 2i+1) of x (..., L, Dh) by table (L, Dh/2, 2); float32 result.

    Computed in float32 whatever x's dtype, as the original (which disables autocast here). Eager
    mode multiplies the pairs as complex numbers (the same products and sums in fewer kernels);
    under torch.compile the real form lets the compiler fuse it.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        pairs = x.float().unflatten(-1, (-1, 2))
        if torch.compiler.is_compiling():
            x0, x1 = pairs.unbind(-1)
            cos, sin = table.unbind(-1)
            return torch.stack([cos * x0 - sin * x1, sin * x0 + cos * x1], dim=-1).flatten(-2)
        rotated = torch.view_as_complex(pairs.contiguous()) * torch.view_as_complex(table)
        return torch.view_as_real(rotated).flatten(-2)


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Unmasked scaled dot-product attention on (B, H, L, Dh); returns (B, L, H*Dh), head-major."""
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).flatten(2)


def timestep_freqs(dim: int, max_period: float) -> Tensor:
    """Timestep embedding frequencies (dim/2,), float32, in the original's exact operation order.

    Computing them as exp(-log(1e4) * ...) or in float64 changes the largest (~1e4) by an ulp,
    which moves cos(t * f) by ~1e-3.
    """
    base = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    return (10000 / max_period) * base


def timestep_embedding(t: Tensor, freqs: Tensor) -> Tensor:
    """(B,) -> (B, dim): [cos(t f), sin(t f)], cosine first, cast back to t's dtype."""
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(t.dtype)


def nearest_exact_indices(src_len: int, dst_len: int) -> Tensor:
    """Source index per output position of nearest-exact resampling, in float32 like PyTorch.

    Index i reads min(floor((i + 0.5) * (src/dst)), src - 1) with both factors float32; exact
    rational arithmetic picks different sources at some positions (e.g. 216 -> 194).
    """
    scale = torch.tensor(src_len, dtype=torch.float32) / torch.tensor(dst_len, dtype=torch.float32)
    pos = torch.arange(dst_len, dtype=torch.float32) + 0.5
    return torch.clamp(torch.floor(pos * scale).long(), max=src_len - 1)


def fix_length(x: Tensor, length: int) -> Tensor:
    """Truncate to the first `length` rows of dim 1, or zero-pad at the end (the original's safe_cat)."""
    n = x.shape[1]
    if n == length:
        return x
    if n > length:
        return x[:, :length]
    pad = x.new_zeros(x.shape[0], length - n, *x.shape[2:])
    return torch.cat([x, pad], dim=1)
