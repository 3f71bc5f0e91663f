"""Synchformer visual encoder (Motionformer-style, divided space-time attention).

Parameter names follow the original checkpoint exactly (``vfeat_extractor.*``, 238 keys at full size),
so ``synchformer_state_dict.pth`` loads strictly after dropping its other branches. The divided
attention is computed with batched ``scaled_dot_product_attention``: every time group (one spatial
location over the frames) and every space group (one frame over the locations) is a batch row, and
each row also sees the CLS key/value, as in the original.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

VFEAT_PREFIX = "vfeat_extractor."


@dataclass(frozen=True)
class SynchformerConfig:
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    img_size: int = 224
    patch_size: int = 16
    patch_size_temp: int = 2
    segment_frames: int = 16
    segment_hop: int = 8
    mlp_ratio: int = 4
    channels: int = 3
    eps: float = 1e-6

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def temporal_tokens(self) -> int:
        return self.segment_frames // self.patch_size_temp


class _PatchEmbed2d(nn.Module):
    # Present only because the checkpoint holds it (strict load); forward never uses it.
    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.channels, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)


class _PatchEmbed3d(nn.Module):
    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        k = (cfg.patch_size_temp, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.channels, cfg.embed_dim, kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, T, H, W) -> (N, t*h*w, D), frame-major token order
        return self.proj(x).flatten(2).transpose(1, 2)


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _DividedAttention(nn.Module):
    """Attention within groups of patch tokens; the CLS token attends to all and is a key of every group."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, *, frames: int, over_time: bool) -> torch.Tensor:
        n, length, dim = x.shape  # (N, 1 + F*P, D)
        h = self.num_heads
        patches = (length - 1) // frames
        # Blocked [q | k | v] layout, heads contiguous inside each block.
        q, k, v = self.qkv(x).view(n, length, 3, h, dim // h).permute(2, 0, 3, 1, 4)  # each (N, H, L, Dh)
        q = q * self.scale
        cls_q, cls_k, cls_v = q[:, :, :1], k[:, :, :1], v[:, :, :1]
        cls_out = F.scaled_dot_product_attention(cls_q, k, v, scale=1.0)  # (N, H, 1, Dh)

        def groups(t: torch.Tensor) -> torch.Tensor:
            t = t[:, :, 1:].unflatten(2, (frames, patches))  # (N, H, F, P, Dh)
            if over_time:
                t = t.transpose(2, 3)  # (N, H, P, F, Dh): one group per location
            return t

        qg, kg, vg = groups(q), groups(k), groups(v)
        g = qg.shape[2]
        kg = torch.cat((cls_k.unsqueeze(2).expand(-1, -1, g, -1, -1), kg), dim=3)
        vg = torch.cat((cls_v.unsqueeze(2).expand(-1, -1, g, -1, -1), vg), dim=3)
        # 4-D inputs keep CPU/GPU SDPA on its fused kernels: (N, H*G, len, Dh)
        out = F.scaled_dot_product_attention(qg.flatten(1, 2), kg.flatten(1, 2), vg.flatten(1, 2), scale=1.0)
        out = out.unflatten(1, (h, g))  # (N, H, G, len, Dh)
        if over_time:
            out = out.transpose(2, 3)
        out = torch.cat((cls_out, out.flatten(2, 3)), dim=2)  # (N, H, L, Dh)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class _DividedBlock(nn.Module):
    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=cfg.eps)
        self.attn = _DividedAttention(d, cfg.num_heads)
        self.timeattn = _DividedAttention(d, cfg.num_heads)
        self.norm2 = nn.LayerNorm(d, eps=cfg.eps)
        self.mlp = _Mlp(d, d * cfg.mlp_ratio)
        self.norm3 = nn.LayerNorm(d, eps=cfg.eps)

    def forward(self, x: torch.Tensor, *, frames: int) -> torch.Tensor:
        x = x + self.timeattn(self.norm3(x), frames=frames, over_time=True)
        x = x + self.attn(self.norm1(x), frames=frames, over_time=False)
        return x + self.mlp(self.norm2(x))


class _SpatialAggregator(nn.Module):
    """Pre-norm transformer encoder layer over the 196 locations of one temporal token, CLS read out."""

    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.num_heads = cfg.num_heads
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.self_attn = nn.MultiheadAttention(d, cfg.num_heads, batch_first=True)
        self.linear1 = nn.Linear(d, d * cfg.mlp_ratio)
        self.linear2 = nn.Linear(d * cfg.mlp_ratio, d)
        self.norm1 = nn.LayerNorm(d, eps=cfg.eps)
        self.norm2 = nn.LayerNorm(d, eps=cfg.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape  # (N, P, D)
        h = self.num_heads
        x = torch.cat((self.cls_token.expand(n, -1, -1), x), dim=1)
        y = self.norm1(x)
        qkv = F.linear(y, self.self_attn.in_proj_weight, self.self_attn.in_proj_bias)
        q, k, v = qkv.view(n, length + 1, 3, h, d // h).permute(2, 0, 3, 1, 4)
        # Only the CLS output is read, and every sublayer is per-token, so only its query is needed.
        a = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # (N, H, 1, Dh)
        a = self.self_attn.out_proj(a.transpose(1, 2).reshape(n, 1, d))
        c = x[:, :1] + a
        c = c + self.linear2(F.gelu(self.linear1(self.norm2(c))))
        return c[:, 0]  # (N, D)


class _MotionFormer(nn.Module):
    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.cfg = cfg
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, d))
        self.temp_embed = nn.Parameter(torch.zeros(1, cfg.temporal_tokens, d))
        self.patch_embed = _PatchEmbed2d(cfg)
        self.patch_embed_3d = _PatchEmbed3d(cfg)
        self.blocks = nn.ModuleList(_DividedBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=cfg.eps)
        self.spatial_attn_agg = _SpatialAggregator(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, 16, H, W) segments -> (N, 8, D)."""
        cfg = self.cfg
        n = x.shape[0]
        t, p = cfg.temporal_tokens, cfg.num_patches
        x = self.patch_embed_3d(x)  # (N, t*p, D)
        x = torch.cat((self.cls_token.expand(n, -1, -1), x), dim=1)
        pos = self.pos_embed[:, 1:].repeat(1, t, 1) + self.temp_embed.repeat_interleave(p, dim=1)
        x = x + torch.cat((self.pos_embed[:, :1], pos), dim=1)
        for blk in self.blocks:
            x = blk(x, frames=t)
        x = self.norm(x[:, 1:])  # (N, t*p, D)
        x = x.reshape(n * t, p, -1)  # frame-major tokens: one row per temporal token
        return self.spatial_attn_agg(x).view(n, t, -1)


class Synchformer(nn.Module):
    """Synchformer's visual branch: 16-frame segments with hop 8 -> 8 feature frames per segment."""

    def __init__(self, *, embed_dim: int = 768, depth: int = 12, num_heads: int = 12) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} not divisible by num_heads {num_heads}")
        self.config = SynchformerConfig(embed_dim=embed_dim, depth=depth, num_heads=num_heads)
        self.vfeat_extractor = _MotionFormer(self.config)

    @property
    def feature_dim(self) -> int:
        return self.config.embed_dim

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        """Keep only ``vfeat_extractor.*`` keys (the checkpoint may carry the audio branch), then load."""
        own = {k: v for k, v in state_dict.items() if k.startswith(VFEAT_PREFIX)}
        return super().load_state_dict(own, strict=strict, assign=assign)

    def num_segments(self, frames: int) -> int:
        c = self.config
        return (frames - c.segment_frames) // c.segment_hop + 1 if frames >= c.segment_frames else 0

    def forward(self, segments: torch.Tensor) -> torch.Tensor:
        """(B, S, 16, C, H, W) -> (B, S, 8, D)."""
        b, s = segments.shape[:2]
        x = segments.flatten(0, 1).transpose(1, 2)  # (B*S, C, 16, H, W)
        return self.vfeat_extractor(x).unflatten(0, (b, s))

    def encode(self, video: torch.Tensor, *, segments_per_batch: int | None = None) -> torch.Tensor:
        """(B, T, 3, 224, 224) normalised frames -> (B, S*8, D), segment-major; S = (T - 16)//8 + 1.

        ``segments_per_batch`` bounds how many segments go through the encoder at once (memory).
        """
        c = self.config
        b, t = video.shape[:2]
        s = self.num_segments(t)
        if s < 1:
            raise ValueError(f"need at least {c.segment_frames} frames, got {video.shape=}")
        # (B, S, 16, C, H, W) view with hop 8: no copy until the transpose in forward.
        segs = video.unfold(1, c.segment_frames, c.segment_hop).permute(0, 1, 5, 2, 3, 4)
        flat = segs.flatten(0, 1)
        chunk = segments_per_batch or flat.shape[0]
        outs = [
            self.vfeat_extractor(flat[i : i + chunk].transpose(1, 2)) for i in range(0, flat.shape[0], chunk)
        ]
        return torch.cat(outs).view(b, s * c.temporal_tokens, -1)
