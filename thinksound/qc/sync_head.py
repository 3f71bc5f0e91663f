"""Synchformer's sync head: one sequence [OFF, visual tokens, MOD, audio tokens] through a small
pre-norm transformer; the OFF token's output is classified into audio-visual offsets.

Names follow the published checkpoint (``transformer.*``, ``vproj``, ``aproj``). Dropout is left out:
the model only ever runs in eval mode here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SyncHeadConfig:
    width: int = 768
    visual_dim: int = 768
    audio_dim: int = 768
    layers: int = 3
    heads: int = 8
    window_segments: int = 14
    visual_tokens: int = 8
    audio_tokens: int = 6
    num_offsets: int = 21
    max_offset_sec: float = 2.0

    @property
    def sequence_length(self) -> int:
        return 2 + self.window_segments * (self.visual_tokens + self.audio_tokens)

    def offset_grid(self) -> torch.Tensor:
        """Offset in seconds of each class: -2.0 .. +2.0 in steps of 0.2 (21 classes)."""
        grid = torch.linspace(
            -self.max_offset_sec, self.max_offset_sec, self.num_offsets, dtype=torch.float64, device="cpu"
        )
        return torch.round(grid * 1e9) / 1e9  # the middle class is exactly 0, not -1e-16


class _SelfAttention(nn.Module):
    def __init__(self, cfg: SyncHeadConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.key = nn.Linear(cfg.width, cfg.width)
        self.query = nn.Linear(cfg.width, cfg.width)
        self.value = nn.Linear(cfg.width, cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, length, self.heads, d // self.heads).transpose(1, 2)  # (B, H, L, Dh)

        y = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)))
        return self.proj(y.transpose(1, 2).reshape(b, length, d))


class _Block(nn.Module):
    def __init__(self, cfg: SyncHeadConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.width)
        self.ln2 = nn.LayerNorm(cfg.width)
        self.attn = _SelfAttention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg.width, 4 * cfg.width), nn.GELU(), nn.Linear(4 * cfg.width, cfg.width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class _PositionalEmbedding(nn.Module):
    def __init__(self, cfg: SyncHeadConfig) -> None:
        super().__init__()
        self.pos_emb = nn.Parameter(torch.zeros(1, cfg.sequence_length, cfg.width))


class GlobalTransformer(nn.Module):
    """(B, Sv, D) visual and (B, Sa, D) audio tokens -> (B, num_offsets) logits."""

    def __init__(self, cfg: SyncHeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.vis_in_lnorm = nn.LayerNorm(d)
        self.aud_in_lnorm = nn.LayerNorm(d)
        self.OFF_tok = nn.Parameter(torch.zeros(1, 1, d))
        self.MOD_tok = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_emb_cfg = _PositionalEmbedding(cfg)
        self.blocks = nn.Sequential(*(_Block(cfg) for _ in range(cfg.layers)))
        self.ln_f = nn.LayerNorm(d)
        self.off_head = nn.Linear(d, cfg.num_offsets)

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        b = v.shape[0]
        x = torch.cat(
            (
                self.OFF_tok.expand(b, -1, -1),
                self.vis_in_lnorm(v),
                self.MOD_tok.expand(b, -1, -1),
                self.aud_in_lnorm(a),
            ),
            dim=1,
        )
        if x.shape[1] != self.cfg.sequence_length:
            raise ValueError(f"sync head takes {self.cfg.sequence_length} tokens, got {x.shape=}")
        x = self.blocks(x + self.pos_emb_cfg.pos_emb)
        return self.off_head(self.ln_f(x[:, 0]))
