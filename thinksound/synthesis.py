"""The high-level call the pipeline uses: features in, raw decoded audio out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from thinksound.generator import Generator
from thinksound.sampler import sample_euler


def item_noise(gen: Generator, seeds: Sequence[int], *, latent_len: int) -> Tensor:
    """(B, C, N) noise; item i comes from its own CPU generator seeded with seeds[i], so an item's
    noise (and result) does not depend on the batch it is in. The original draws one batch stream."""
    shape = (1, gen.config.latent_dim, latent_len)
    draws = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.cat(draws)


def synthesize(
    gen: Generator,
    features: Mapping[str, Tensor],
    *,
    duration_sec: float,
    seeds: Sequence[int],
    steps: int = 24,
    cfg_scale: float = 5.0,
    precision: str = "fp32",
) -> Tensor:
    """Generate (B, 2, N * 2048) float32 audio, raw decoder output (not normalised).

    B = len(seeds); every present feature must have batch B; absent features select the learned
    empty ones (text-only or video-only generation). N follows predict.py's formula for duration_sec,
    so the audio is slightly longer than the duration (e.g. 9 s -> 397,312 samples). As in the
    original, features longer than the nominal lengths are truncated and shorter ones zero-padded at
    the end (a 2 s clip's 40 sync tokens run as 48 with 8 zero rows). With a randomly initialised
    generator the audio is noise.
    """
    if not seeds:
        raise ValueError("seeds must name at least one item")
    n, _, _ = gen.config.seq_lengths(duration_sec)
    noise = item_noise(gen, seeds, latent_len=n)
    latents = sample_euler(
        gen, noise, features, steps=steps, cfg_scale=cfg_scale, duration_sec=duration_sec, precision=precision
    )
    # The waveform is decoded in float32 unless fp16 is asked for (the original decodes under fp16
    # autocast on GPU): bf16's 8-bit mantissa is audible through the decoder's 30-odd convolutions.
    with gen.autocast("fp16" if precision == "fp16" else "fp32"):
        audio = gen.decode(latents)
    return audio.float()
