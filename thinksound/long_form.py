"""Audio for tracks of any length: joint sampling of overlapping windows, chunked decoding, both joins.

``joint_euler`` and ``iter_decode_track`` are pure functions of a velocity or decoder callable;
``sample_latents`` samples a batch of items whose windows share a length with the generator, and
``decode_audio`` decodes one item's latents to its audio a piece at a time (``synthesize_windows`` joins
the pieces of every item).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from thinksound.generator import Generator
from thinksound.sampler import VelocityFn, euler
from thinksound.windows import JOIN_MODES, WindowPlan, track_noise, window_seed

# Latent frames decoded per VAE call, and the context decoded on each side of a chunk and dropped. The
# Oobleck decoder sees about 12 latent frames either way (7-tap convolutions, dilations up to 9 at
# 8 samples per frame), so 32 frames of context reproduce the whole-track decode.
DECODE_CHUNK = 512
DECODE_CONTEXT = 32


def _spans(plans: Sequence[WindowPlan]) -> list[tuple[int, int]]:
    """(start, end) of every window in the flat track that concatenates the items' tracks."""
    spans, offset = [], 0
    for plan in plans:
        spans += [(offset + w.start, offset + w.end) for w in plan.windows]
        offset += plan.track_len
    return spans


def joint_euler(
    fn: VelocityFn, tracks: Sequence[Tensor], plans: Sequence[WindowPlan], *, steps: int
) -> list[Tensor]:
    """Sample the windows of every track together (MultiDiffusion): at each Euler step, `fn(t, x)`
    gives the velocity of every window (K, C, W) at once, and overlapping windows' velocities are
    blended with the plans' weights, so each track is one coherent latent sequence.

    `tracks` are the items' (C, N_i) noises; returns their (C, N_i) latents.
    """
    if len(tracks) != len(plans):
        raise ValueError(f"{len(tracks)} tracks for {len(plans)} plans")
    for track, plan in zip(tracks, plans, strict=True):
        if track.shape[-1] != plan.track_len:
            raise ValueError(f"track of {track.shape[-1]} frames for a plan of {plan.track_len}")
    spans = _spans(plans)
    lengths = {b - a for a, b in spans}
    if len(lengths) != 1:
        raise ValueError(f"windows sampled together must share one length, got {sorted(lengths)}")
    flat = torch.cat(list(tracks), dim=-1).unsqueeze(0)  # (1, C, sum N_i)
    # (W,) weight of each window over its own frames; exactly 1 where a window stands alone.
    weights = [
        row[w.start : w.end].to(device=flat.device, dtype=flat.dtype)
        for p in plans
        for w, row in zip(p.windows, p.latent_weights(), strict=True)
    ]

    def blended(t: Tensor, x: Tensor) -> Tensor:
        windows = torch.stack([x[0, :, a:b] for a, b in spans])  # (K, C, W)
        velocity = fn(t[:1].expand(len(spans)), windows)
        out = torch.zeros_like(x)
        for (a, b), v, weight in zip(spans, velocity, weights, strict=True):
            out[0, :, a:b] += v * weight
        return out

    joined = euler(blended, flat, steps=steps)[0]
    return list(joined.split([p.track_len for p in plans], dim=-1))


def iter_decode_track(
    decode: Callable[[Tensor], Tensor],
    latents: Tensor,
    *,
    chunk: int = DECODE_CHUNK,
    context: int = DECODE_CONTEXT,
) -> Iterator[Tensor]:
    """Decode (C, N) latents to (channels, N * hop) audio, yielded in pieces of `chunk` frames, each
    decoded with `context` frames either side that are then dropped, so memory is bounded by the chunk,
    not N.

    Up to `chunk` frames this is one call of `decode`, exactly as decoding the track at once.
    """
    n = latents.shape[-1]
    if n <= chunk:
        yield decode(latents.unsqueeze(0))[0]
        return
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        lo, hi = max(0, start - context), min(n, stop + context)
        audio = decode(latents[:, lo:hi].unsqueeze(0))[0]  # (channels, (hi - lo) * hop)
        hop = audio.shape[-1] // (hi - lo)
        yield audio[:, (start - lo) * hop : (stop - lo) * hop]


def decode_track(
    decode: Callable[[Tensor], Tensor],
    latents: Tensor,
    *,
    chunk: int = DECODE_CHUNK,
    context: int = DECODE_CONTEXT,
) -> Tensor:
    """The whole (channels, N * hop) audio of `iter_decode_track`."""
    return torch.cat(list(iter_decode_track(decode, latents, chunk=chunk, context=context)), dim=-1)


def iter_equal_power_join(
    decode: Callable[[Tensor], Tensor], latents: Tensor, plan: WindowPlan
) -> Iterator[Tensor]:
    """`equal_power_join` of the decoded (K, C, W) window latents, decoding one window at a time and
    yielding each stretch of the track as soon as no later window reaches it."""
    done, pending = 0, None  # pending: the joined audio from sample `done` on, not final yet
    for w in plan.windows:
        clip = decode(latents[w.index].unsqueeze(0))[0].float()  # (channels, W * hop)
        a, b = w.start * plan.hop, w.end * plan.hop
        if pending is None:
            pending = torch.zeros((clip.shape[0], 0), dtype=clip.dtype)
        if done + pending.shape[-1] < b:
            grow = torch.zeros((clip.shape[0], b - done - pending.shape[-1]), dtype=clip.dtype)
            pending = torch.cat([pending, grow], dim=-1)
        pending[:, a - done : b - done] += clip[:, : b - a] * plan.window_gains(w.index, a, b).to(clip.dtype)
        final = plan.windows[w.index + 1].start * plan.hop if w.index + 1 < len(plan.windows) else b
        yield pending[:, : final - done]
        pending, done = pending[:, final - done :], final


@torch.no_grad()
def sample_latents(
    gen: Generator,
    features: Mapping[str, Tensor],
    plans: Sequence[WindowPlan],
    window_seeds: Sequence[Sequence[int]],
    *,
    join: str = "multidiffusion",
    steps: int = 24,
    cfg_scale: float = 5.0,
    precision: str = "fp32",
) -> list[Tensor]:
    """Per item, the latents its audio is decoded from: the joined (C, track_len) track for
    ``multidiffusion``, its windows' (K, C, W) latents, sampled each on its own, for ``crossfade``.

    `features` are batched over all windows, item after item, window after window; every window shares
    one length and generation duration. `window_seeds[i][k]` seeds window k of item i.
    """
    if join not in JOIN_MODES:
        raise ValueError(f"join must be one of {JOIN_MODES}, got {join!r}")
    if len(window_seeds) != len(plans):
        raise ValueError(f"{len(window_seeds)} seed lists for {len(plans)} items")
    durations = {p.window_sec for p in plans}
    if len(durations) != 1:
        raise ValueError(f"windows generated together must share one duration, got {sorted(durations)}")
    count = sum(len(p.windows) for p in plans)
    window_len = plans[0].window_len
    prepared = gen.prepare(
        features, batch=count, latent_len=window_len, cfg_scale=cfg_scale, duration_sec=durations.pop()
    )

    def velocity(t: Tensor, x: Tensor) -> Tensor:
        return gen.guided_flow(prepared, x, t)

    latent_dim, device = gen.config.latent_dim, gen.device
    if join == "multidiffusion":
        noises = [
            track_noise(p, latent_dim, list(s)).to(device) for p, s in zip(plans, window_seeds, strict=True)
        ]
        with gen.autocast(precision):
            return joint_euler(velocity, noises, plans, steps=steps)
    noise = torch.stack(
        [
            torch.randn((latent_dim, window_len), generator=torch.Generator().manual_seed(int(seed)))
            for seeds in window_seeds
            for seed in seeds
        ]
    ).to(device)
    with gen.autocast(precision):
        latents = euler(velocity, noise, steps=steps)
    return list(latents.split([len(p.windows) for p in plans]))


def decode_audio(
    gen: Generator, latents: Tensor, plan: WindowPlan, *, join: str = "multidiffusion", precision: str = "fp32"
) -> Iterator[Tensor]:
    """An item's raw float32 audio from its `sample_latents`, (channels, n) piece after piece, in order,
    track_len * hop samples in all; memory holds a few windows' audio, whatever the track's length."""
    # The waveform is decoded in float32 unless fp16 is asked for (see `synthesis.synthesize`).
    decode_precision = "fp16" if precision == "fp16" else "fp32"

    def decode(x: Tensor) -> Tensor:
        with torch.no_grad(), gen.autocast(decode_precision):
            return gen.decode(x)

    if join == "multidiffusion":
        return (piece.float().cpu() for piece in iter_decode_track(decode, latents))
    return (piece.cpu() for piece in iter_equal_power_join(decode, latents, plan))


def synthesize_windows(
    gen: Generator,
    features: Mapping[str, Tensor],
    plans: Sequence[WindowPlan],
    window_seeds: Sequence[Sequence[int]],
    *,
    join: str = "multidiffusion",
    steps: int = 24,
    cfg_scale: float = 5.0,
    precision: str = "fp32",
) -> list[Tensor]:
    """Raw (channels, track_len * hop) float32 audio per item, from features of every window: the whole
    tracks of `sample_latents` and `decode_audio`.

    ``multidiffusion`` samples each item's windows jointly and decodes the joined latent track;
    ``crossfade`` samples every window on its own and joins the decoded windows with equal-power fades.
    A one-window item gives the same audio as ``synthesize`` with the window's seed, in either mode.
    """
    latents = sample_latents(
        gen, features, plans, window_seeds, join=join, steps=steps, cfg_scale=cfg_scale, precision=precision
    )
    return [
        torch.cat(list(decode_audio(gen, item, plan, join=join, precision=precision)), dim=-1)
        for item, plan in zip(latents, plans, strict=True)
    ]


def default_window_seeds(plan: WindowPlan, item_seed: int) -> list[int]:
    """Every window's seed from the item's seed and the window's index."""
    return [window_seed(item_seed, w.index) for w in plan.windows]
