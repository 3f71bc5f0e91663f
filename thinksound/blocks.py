"""Transformer blocks of the MM-DiT: single-stream block, joint block, final layer, timestep embedder.

Module and parameter names follow the published checkpoint (``attn.qkv``, ``adaLN_modulation.1``...).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from thinksound.layers import MLP, ChannelLastConv1d, ConvMLP, modulate
from thinksound.math import apply_rope, attention, timestep_embedding, timestep_freqs


class SelfAttention(nn.Module):
    """qkv projection with per-head RMSNorm on q and k.

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

    def qkv_heads(self, x: Tensor, rope: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(B, L, D) -> q, k, v each (B, H, L, Dh), normalised and rotated."""
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, self.num_heads, d // self.num_heads, 3).permute(4, 0, 2, 1, 3)
        q, k, v = qkv.unbind(0)
        q = self.q_norm(q)
        k = self.k_norm(k)
        if rope is not None:
            q = apply_rope(q, rope)
            k = apply_rope(k, rope)
        return q, k, v


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

    def pre_attention(
        self, x: Tensor, c: Tensor, rope: Tensor | None
    ) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, ...]]:
        mods = self.adaLN_modulation(c).chunk(2 if self.pre_only else 6, dim=-1)
        h = modulate(self.norm1(x), mods[0], mods[1])
        return self.attn.qkv_heads(h, rope), mods[2:]

    def post_attention(self, x: Tensor, attn_out: Tensor, mods: tuple[Tensor, ...]) -> Tensor:
        if self.pre_only:
            return x
        gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        x = x + self.linear1(attn_out) * gate_msa
        return x + self.ffn(modulate(self.norm2(x), shift_mlp, scale_mlp)) * gate_mlp

    def forward(self, x: Tensor, c: Tensor, rope: Tensor | None) -> Tensor:
        (q, k, v), mods = self.pre_attention(x, c, rope)
        return self.post_attention(x, attention(q, k, v), mods)


class JointBlock(nn.Module):
    """Three streams (latent, CLIP, text) with their own weights and one joint attention over
    [latent | clip | text]."""

    def __init__(
        self, *, dim: int, num_heads: int, kernel_size: int, mlp_ratio: float, mlp_multiple_of: int, pre_only: bool
    ) -> None:
        super().__init__()
        common = {"dim": dim, "num_heads": num_heads, "mlp_ratio": mlp_ratio, "mlp_multiple_of": mlp_multiple_of}
        self.pre_only = pre_only
        self.latent_block = SingleBlock(kernel_size=kernel_size, pre_only=False, **common)
        self.clip_block = SingleBlock(kernel_size=kernel_size, pre_only=pre_only, **common)
        self.text_block = SingleBlock(kernel_size=1, pre_only=pre_only, **common)

    def forward(
        self,
        latent: Tensor,
        clip: Tensor,
        text: Tensor,
        global_c: Tensor,
        extended_c: Tensor,
        latent_rope: Tensor,
        clip_rope: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        (ql, kl, vl), mods_l = self.latent_block.pre_attention(latent, extended_c, latent_rope)
        (qc, kc, vc), mods_c = self.clip_block.pre_attention(clip, global_c, clip_rope)
        (qt, kt, vt), mods_t = self.text_block.pre_attention(text, global_c, None)
        n, nc = latent.shape[1], clip.shape[1]
        k = torch.cat([kl, kc, kt], dim=2)
        v = torch.cat([vl, vc, vt], dim=2)
        if self.pre_only:
            # The CLIP and text outputs of a pre-only block are never used: attend with latent queries only.
            return self.latent_block.post_attention(latent, attention(ql, k, v), mods_l), clip, text
        q = torch.cat([ql, qc, qt], dim=2)
        out = attention(q, k, v)
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

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.conv(modulate(self.norm(x), shift, scale))


class TimestepEmbedder(nn.Module):
    """Sinusoidal timestep features (cos first) followed by Linear-SiLU-Linear."""

    def __init__(self, *, dim: int, frequency_embedding_size: int, max_period: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.register_buffer("freqs", timestep_freqs(frequency_embedding_size, max_period), persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.freqs))

