"""Synchformer's audio branch: an AST encoder per 0.64 s segment, aggregated over frequency.

Parameter names follow the published checkpoint (``afeat_extractor.*``): the AST backbone keeps the
transformers 4.27 ``ASTModel`` names (``ast.embeddings.*``, ``ast.encoder.layer.N.attention.attention
.query`` ...) the original was built from, and the frequency aggregator is a pre-norm
``nn.TransformerEncoderLayer`` with an extra CLS token (``freq_attn_agg.*``).

A segment's (66 frames x 128 bins) spectrogram is cut into 16x16 patches with stride 10: 12 along
frequency and 6 along time, so each segment yields 6 audio tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from thinksound.features.synchformer import SynchformerConfig, _SpatialAggregator


@dataclass(frozen=True)
class AudioBranchConfig:
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    n_mels: int = 128
    frames: int = 66
    patch: int = 16
    stride: int = 10
    eps: float = 1e-12

    @property
    def freq_patches(self) -> int:
        return (self.n_mels - self.patch) // self.stride + 1

    @property
    def time_patches(self) -> int:
        return (self.frames - self.patch) // self.stride + 1


class _PatchEmbeddings(nn.Module):
    def __init__(self, cfg: AudioBranchConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(1, cfg.hidden, kernel_size=cfg.patch, stride=cfg.stride)


class _Embeddings(nn.Module):
    def __init__(self, cfg: AudioBranchConfig) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden))
        self.patch_embeddings = _PatchEmbeddings(cfg)
        self.position_embeddings = nn.Parameter(torch.zeros(1, cfg.freq_patches * cfg.time_patches + 2, cfg.hidden))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """(N, 128, 66) mel-major spectrograms -> (N, 2 + 12*6, D), patches frequency-major."""
        x = self.patch_embeddings.projection(spec.unsqueeze(1)).flatten(2).transpose(1, 2)
        n = x.shape[0]
        x = torch.cat((self.cls_token.expand(n, -1, -1), self.distillation_token.expand(n, -1, -1), x), dim=1)
        return x + self.position_embeddings


class _Linear(nn.Module):
    # transformers names every projection `<name>.dense`
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)


class _SelfAttention(nn.Module):
    def __init__(self, cfg: AudioBranchConfig) -> None:
        super().__init__()
        self.query = nn.Linear(cfg.hidden, cfg.hidden)
        self.key = nn.Linear(cfg.hidden, cfg.hidden)
        self.value = nn.Linear(cfg.hidden, cfg.hidden)


class _Attention(nn.Module):
    def __init__(self, cfg: AudioBranchConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.attention = _SelfAttention(cfg)
        self.output = _Linear(cfg.hidden, cfg.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        a = self.attention

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, length, self.heads, d // self.heads).transpose(1, 2)  # (N, H, L, Dh)

        out = F.scaled_dot_product_attention(split(a.query(x)), split(a.key(x)), split(a.value(x)))
        return self.output.dense(out.transpose(1, 2).reshape(n, length, d))


class _Layer(nn.Module):
    def __init__(self, cfg: AudioBranchConfig) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Linear(cfg.hidden, cfg.intermediate)
        self.output = _Linear(cfg.intermediate, cfg.hidden)
        self.layernorm_before = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.layernorm_after = nn.LayerNorm(cfg.hidden, eps=cfg.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.layernorm_before(x))
        return x + self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x))))


class _Encoder(nn.Module):
    def __init__(self, cfg: AudioBranchConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg.layers))


class _AST(nn.Module):
    def __init__(self, cfg: AudioBranchConfig) -> None:
        super().__init__()
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.layernorm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(spec)
        for layer in self.encoder.layer:
            x = layer(x)
        return self.layernorm(x)


class SynchformerAudio(nn.Module):
    """(B, S, 128, 66) log-mel segments -> (B, S, 6, D) audio tokens (``afeat_extractor`` of the checkpoint)."""

    def __init__(self, cfg: AudioBranchConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or AudioBranchConfig()
        if cfg.hidden % cfg.heads or cfg.intermediate % cfg.hidden:
            raise ValueError(f"hidden {cfg.hidden} must divide by heads {cfg.heads} and divide intermediate")
        self.ast = _AST(cfg)
        # Same layer as the visual branch's spatial aggregator: pre-norm, GELU, eps 1e-6, CLS read out.
        agg = SynchformerConfig(embed_dim=cfg.hidden, num_heads=cfg.heads, mlp_ratio=cfg.intermediate // cfg.hidden)
        self.freq_attn_agg = _SpatialAggregator(agg)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        b, s = spec.shape[:2]
        cfg = self.cfg
        f, t = cfg.freq_patches, cfg.time_patches
        x = self.ast(spec.flatten(0, 1))[:, 2:]  # (N, f*t, D) frequency-major
        x = x.unflatten(1, (f, t)).transpose(1, 2).flatten(0, 1)  # (N*t, f, D): one row per time step
        return self.freq_attn_agg(x).view(b, s, t, -1)
