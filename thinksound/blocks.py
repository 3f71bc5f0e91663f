"""Transformer blocks of the MM-DiT: single-stream block, joint block, final layer, timestep embedder.

Module and parameter names follow the published checkpoint (``attn.qkv``, ``adaLN_modulation.1``...).

Blocks take their conditioning already passed through SiLU (``silu_c``): every adaLN of a step sees
the same two condition tensors, so the model applies SiLU once per step instead of once per block.
The joint attention normalises and rotates q and k of all three streams in one pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thinksound.layers import MLP, ChannelLastConv1d, ConvMLP
from thinksound.math import apply_rope, timestep_embedding, timestep_freqs


class SelfAttention(nn.Module):
    """qkv projection with per-head RMSNorm weights for q and k.

    The qkv output channels are interleaved: channel ((head * Dh) + d) * 3 + j holds q, k or v for
    j = 0, 1, 2. A blocked [q | k | v] split of the published weights is wrong.
    """

    def __init__(self, *, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        # eps=None: torch uses finfo(dtype).eps, like the original.
        self.q_norm = nn.RMSNorm(dim // num_heads)
        self.k_norm = nn.RMSNorm(dim // num_heads)

    def qk_weight(self) -> Tensor:
        """(2, Dh): the q and k RMSNorm weights stacked."""
        return torch.stack([self.q_norm.weight, self.k_norm.weight])


def joint_attention(
    qkvs: list[Tensor], *, num_heads: int, qk_weight: Tensor, rope: Tensor, n_queries: int | None = None
) -> Tensor:
    """Attention over the concatenation of several streams' qkv projections.

    qkvs: (B, L_i, 3D) each, interleaved layout. qk_weight (2, 1, 1, L or 1, Dh) holds each token's
    q/k RMSNorm weight, rope (L, Dh/2, 2) its rotation (identity for streams without RoPE).
    Only the first n_queries tokens are used as queries when given (the outputs of a pre-only
    block's other streams are never used). Returns (B, Lq, D).
    """
    qkv = qkvs[0] if len(qkvs) == 1 else torch.cat(qkvs, dim=1)
    b, n, d3 = qkv.shape
    dh = d3 // 3 // num_heads
    qkv = qkv.view(b, n, num_heads, dh, 3).permute(4, 0, 2, 1, 3)  # (3, B, H, L, Dh)
    qk = F.rms_norm(qkv[:2], (dh,)) * qk_weight
    qk = apply_rope(qk, rope).to(qkv.dtype)
    q, k = qk.unbind(0)
    if n_queries is not None:
        q = q[:, :, :n_queries]
    # The flash kernel needs a unit last-dim stride; v is strided by the interleaved layout.
    out = F.scaled_dot_product_attention(q, k, qkv[2].contiguous())  # (B, H, Lq, Dh)
    return out.transpose(1, 2).flatten(2)


class SingleBlock(nn.Module):
    """adaLN-modulated attention + SwiGLU block; per-token modulation when c is (B, L, D).

    With kernel_size > 1 the attention output projection and the MLP are channel-last convolutions.
    A pre-only block computes q, k, v and nothing after the attention.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        kernel_size: int,
        mlp_ratio: float,
        mlp_multiple_of: int,
        pre_only: bool = False,
    ) -> None:
        super().__init__()
        self.pre_only = pre_only
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = SelfAttention(dim=dim, num_heads=num_heads)
        if not pre_only:
            width = int(dim * mlp_ratio)
            if kernel_size == 1:
                self.linear1 = nn.Linear(dim, dim)
                self.ffn = MLP(dim=dim, width=width, multiple_of=mlp_multiple_of)
            else:
                pad = (kernel_size - 1) // 2
                self.linear1 = ChannelLastConv1d(dim, dim, kernel_size, padding=pad)
                self.ffn = ConvMLP(dim=dim, width=width, kernel_size=kernel_size, multiple_of=mlp_multiple_of)
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        n_mod = 2 if pre_only else 6
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, n_mod * dim))

    def pre_attention(self, x: Tensor, silu_c: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """x (B, L, D), silu_c = SiLU(c) -> qkv projection (B, L, 3D) and the post-attention modulation."""
        mods = self.adaLN_modulation[1](silu_c).chunk(2 if self.pre_only else 6, dim=-1)
        shift, scale = mods[0], mods[1]
        h = torch.addcmul(shift, self.norm1(x), 1 + scale)
        return self.attn.qkv(h), mods[2:]

    def post_attention(self, x: Tensor, attn_out: Tensor, mods: tuple[Tensor, ...]) -> Tensor:
        if self.pre_only:
            return x
        gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        x = torch.addcmul(x, self.linear1(attn_out), gate_msa)
        h = torch.addcmul(shift_mlp, self.norm2(x), 1 + scale_mlp)
        return torch.addcmul(x, self.ffn(h), gate_mlp)

    def forward(self, x: Tensor, silu_c: Tensor, *, qk_weight: Tensor, rope: Tensor) -> Tensor:
        qkv, mods = self.pre_attention(x, silu_c)
        out = joint_attention([qkv], num_heads=self.num_heads, qk_weight=qk_weight, rope=rope)
        return self.post_attention(x, out, mods)


class JointBlock(nn.Module):
    """Three streams (latent, CLIP, text) with their own weights and one joint attention over
    [latent | clip | text]."""

    def __init__(
        self, *, dim: int, num_heads: int, kernel_size: int, mlp_ratio: float, mlp_multiple_of: int, pre_only: bool
    ) -> None:
        super().__init__()
        common = {"dim": dim, "num_heads": num_heads, "mlp_ratio": mlp_ratio, "mlp_multiple_of": mlp_multiple_of}
        self.pre_only = pre_only
        self.num_heads = num_heads
        self.latent_block = SingleBlock(kernel_size=kernel_size, pre_only=False, **common)
        self.clip_block = SingleBlock(kernel_size=kernel_size, pre_only=pre_only, **common)
        self.text_block = SingleBlock(kernel_size=1, pre_only=pre_only, **common)

    def qk_weight(self, n_latent: int, n_clip: int, n_text: int) -> Tensor:
        """(2, 1, 1, L, Dh): every token's q and k RMSNorm weight along the joint sequence."""
        parts = [
            blk.attn.qk_weight()[:, None].expand(-1, n, -1)
            for blk, n in ((self.latent_block, n_latent), (self.clip_block, n_clip), (self.text_block, n_text))
        ]
        return torch.cat(parts, dim=1)[:, None, None]

    def forward(
        self,
        latent: Tensor,
        clip: Tensor,
        text: Tensor,
        silu_global: Tensor,
        silu_extended: Tensor,
        *,
        qk_weight: Tensor,
        rope: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        qkv_l, mods_l = self.latent_block.pre_attention(latent, silu_extended)
        qkv_c, mods_c = self.clip_block.pre_attention(clip, silu_global)
        qkv_t, mods_t = self.text_block.pre_attention(text, silu_global)
        n, nc = latent.shape[1], clip.shape[1]
        qkvs = [qkv_l, qkv_c, qkv_t]
        if self.pre_only:
            out = joint_attention(qkvs, num_heads=self.num_heads, qk_weight=qk_weight, rope=rope, n_queries=n)
            return self.latent_block.post_attention(latent, out, mods_l), clip, text
        out = joint_attention(qkvs, num_heads=self.num_heads, qk_weight=qk_weight, rope=rope)
        latent = self.latent_block.post_attention(latent, out[:, :n], mods_l)
        clip = self.clip_block.post_attention(clip, out[:, n : n + nc], mods_c)
        text = self.text_block.post_attention(text, out[:, n + nc :], mods_t)
        return latent, clip, text


class FinalBlock(nn.Module):
    """adaLN (shift, scale) on the per-token condition, then a kernel-7 channel-last conv."""

    def __init__(self, *, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.conv = ChannelLastConv1d(dim, out_dim, kernel_size=7, padding=3)

    def forward(self, x: Tensor, silu_c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation[1](silu_c).chunk(2, dim=-1)
        return self.conv(torch.addcmul(shift, self.norm(x), 1 + scale))


class TimestepEmbedder(nn.Module):
    """Sinusoidal timestep features (cos first) followed by Linear-SiLU-Linear."""

    def __init__(self, *, dim: int, frequency_embedding_size: int, max_period: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.register_buffer("freqs", timestep_freqs(frequency_embedding_size, max_period), persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.freqs))
