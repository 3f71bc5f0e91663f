"""Rectified-flow Euler sampling, equal to the original's ``sample_discrete_euler`` with batch CFG.

``euler`` never touches the model: it integrates any ``fn(t, x)`` velocity callable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from thinksound.generator import Generator

VelocityFn = Callable[[Tensor, Tensor], Tensor]


def euler(fn: VelocityFn, x: Tensor, *, steps: int) -> Tensor:
    """Integrate dx/dt = fn(t, x) from t = 1 (noise) to t = 0 (data) in `steps` Euler steps.

    The schedule is torch.linspace(1, 0, steps + 1) in float32 and t = 0 is never evaluated. The
    timestep vector is built as in the original (t_cur * ones in x's dtype): the embedding reaches
    1e4 rad, so an ulp in t is visible.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    schedule = torch.linspace(1, 0, steps + 1)
    for t_cur, t_next in zip(schedule[:-1], schedule[1:], strict=True):
        t_vec = t_cur * torch.ones((x.shape[0],), dtype=x.dtype, device=x.device)
        dt = t_next - t_cur
        x = x + dt * fn(t_vec, x)
    return x


@torch.no_grad()
def sample_euler(
    gen: Generator,
    noise: Tensor,
    features: Mapping[str, Tensor],
    steps: int = 24,
    cfg_scale: float = 5.0,
    duration_sec: float | None = None,
    *,
    precision: str = "fp32",
) -> Tensor:
    """Latents (B, C, N) from noise (B, C, N): conditions prepared once, then `steps` guided DiT calls."""
    noise = noise.to(gen.device)
    prepared = gen.prepare(
        features, batch=noise.shape[0], latent_len=noise.shape[-1], cfg_scale=cfg_scale, duration_sec=duration_sec
    )
    with gen.autocast(precision):
        return euler(lambda t, x: gen.guided_flow(prepared, x, t), noise, steps=steps)
