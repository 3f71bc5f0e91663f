"""Small building blocks of the MM-DiT, named so that their parameters match the checkpoint."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def swiglu_hidden(width: int, *, multiple_of: int) -> int:
    """SwiGLU hidden width for a nominal width: int(2w/3) rounded up to a multiple."""
    hidden = int(2 * width / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class ChannelLastConv1d(nn.Conv1d):
    """Conv1d on (B, L, C) tensors; weight (out, in, k) as in the checkpoint."""

    def forward(self, x: Tensor) -> Tensor:  # (B, L, Cin) -> (B, L, Cout)
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class MLP(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x), bias-free."""

    def __init__(self, *, dim: int, width: int, multiple_of: int = 256) -> None:
        super().__init__()
        hidden = swiglu_hidden(width, multiple_of=multiple_of)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class ConvMLP(nn.Module):
    """SwiGLU with bias-free channel-last convolutions in place of the linears."""

    def __init__(self, *, dim: int, width: int, kernel_size: int, multiple_of: int = 256) -> None:
        super().__init__()
        hidden = swiglu_hidden(width, multiple_of=multiple_of)
        pad = (kernel_size - 1) // 2
        self.w1 = ChannelLastConv1d(dim, hidden, kernel_size, padding=pad, bias=False)
        self.w2 = ChannelLastConv1d(hidden, dim, kernel_size, padding=pad, bias=False)
        self.w3 = ChannelLastConv1d(dim, hidden, kernel_size, padding=pad, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
