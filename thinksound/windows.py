"""Overlapping windows over a long latent track: the plan, the blend weights and per-window seeds.

A video longer than the generator's native length is generated as a track of latent frames covered by
windows of the native length. Neighbouring windows overlap; over a fade of the configured overlap,
centred in each overlap, one window's weight ramps down as the next one's ramps up (raised cosine, so
the weights sum to one everywhere). The same weights blend velocities during joint sampling
(``multidiffusion``) and, square-rooted, give the equal-power gains of ``crossfade``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from thinksound.config import DiTConfig, GeneratorConfig

JOIN_MODES = ("multidiffusion", "crossfade")


def native_window_sec(config: GeneratorConfig) -> float:
    """The generator's native clip length: the duration its nominal sequence lengths were set for.

    The published config's clip_seq_len 72 at 8 fps (and sync_seq_len 216 at 24 tokens/s, latent 194 at
    21.53 frames/s) is 9 s: ThinkSound was trained on clips of about that length. 9 s is also an
    integer duration in [8, 16), where the feature extractors' lengths equal the model's (see README).
    The tiny preset leaves its lengths open and so takes the published value.
    """
    clip_len = config.dit.clip_seq_len if config.dit.clip_seq_len is not None else DiTConfig().clip_seq_len
    assert clip_len is not None
    return clip_len / config.clip_fps


def covering_duration(config: GeneratorConfig, duration_sec: float) -> float:
    """The duration to ask the generator for so that its audio covers `duration_sec` entirely.

    The latent count follows predict.py's rounding, so it can fall up to half a VAE hop short (a 2.0 s
    clip gets 43 hops, 88,064 samples for 88,200): one more latent frame covers it, and the audio is
    trimmed back. The model maths stays the original's; only the requested length grows.
    """
    latent_len, _, _ = config.seq_lengths(duration_sec)
    if latent_len * config.downsampling_ratio >= math.ceil(duration_sec * config.sample_rate - 1e-6):
        return duration_sec
    return duration_sec + config.downsampling_ratio / config.sample_rate


def window_seed(item_seed: int, index: int) -> int:
    """Window 0 keeps the item's seed (a one-window video is generated as before); later windows get a
    stable 63-bit mix of the item seed and their index, independent of any batch."""
    if index == 0:
        return int(item_seed)
    digest = hashlib.sha256(f"thinksound-window:{int(item_seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True)
class Window:
    """One window: latent frames [start, start + length) of the track."""

    index: int
    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class WindowPlan:
    """How one item's latent track is covered by windows, and where the fades between them lie."""

    track_len: int  # latent frames of the whole track
    window_sec: float  # the duration each window is generated at
    windows: tuple[Window, ...]
    fades: tuple[tuple[float, float], ...]  # per seam i (windows i, i+1): fade [from, to) in latent frames
    sample_rate: int
    hop: int

    @property
    def single(self) -> bool:
        return len(self.windows) == 1

    @property
    def window_len(self) -> int:
        return self.windows[0].length

    def window_range_sec(self, index: int) -> tuple[float, float]:
        """Where window `index` lies in the track, in seconds (its end may pass the video's end)."""
        w = self.windows[index]
        return w.start * self.hop / self.sample_rate, w.end * self.hop / self.sample_rate

    def seam_sec(self, seam: int) -> float:
        """The middle of seam `seam`'s fade, in seconds."""
        a, b = self.fades[seam]
        return (a + b) / 2 * self.hop / self.sample_rate

    def window_weight(self, index: int, positions: Tensor) -> Tensor:
        """(P,) weight of window `index` at positions given in latent-frame units (float64)."""
        pos, w = positions.to(torch.float64), self.windows[index]
        weight = ((pos >= w.start) & (pos < w.end)).to(torch.float64)
        if w.index > 0:
            weight = weight * torch.sin(_ramp(pos, *self.fades[w.index - 1])) ** 2
        if w.index < len(self.windows) - 1:
            weight = weight * torch.cos(_ramp(pos, *self.fades[w.index])) ** 2
        return weight

    def weights(self, positions: Tensor) -> Tensor:
        """(K, P) weights of every window at positions given in latent-frame units (float64).

        They are zero outside each window and sum to one at every covered position.
        """
        return torch.stack([self.window_weight(w.index, positions) for w in self.windows])

    def latent_weights(self) -> Tensor:
        """(K, track_len) weights at the centres of the latent frames."""
        return self.weights(torch.arange(self.track_len, dtype=torch.float64) + 0.5)

    def sample_weights(self, length: int) -> Tensor:
        """(K, length) weights at the centres of audio samples."""
        return self.weights((torch.arange(length, dtype=torch.float64) + 0.5) / self.hop)

    def window_gains(self, index: int, start: int, stop: int) -> Tensor:
        """(stop - start,) equal-power gains sqrt(weight) of window `index` over audio samples [start, stop)."""
        positions = (torch.arange(start, stop, dtype=torch.float64) + 0.5) / self.hop
        return self.window_weight(index, positions).sqrt()


def _ramp(pos: Tensor, start: float, stop: float) -> Tensor:
    """0 before the fade, pi/2 after it, linear in between."""
    return ((pos - start) / (stop - start)).clamp(0, 1) * (math.pi / 2)


def plan_windows(
    config: GeneratorConfig,
    duration_sec: float,
    *,
    overlap_sec: float = 1.0,
    window_sec: float | None = None,
) -> WindowPlan:
    """Cover `duration_sec` (the generation duration) with windows of the native length.

    Up to one window long, the plan is that one window at the covering duration, as generated before
    windows existed. Longer tracks get the fewest windows of exactly `window_sec` whose neighbours
    overlap by at least `overlap_sec`, spread evenly from the first frame to the last, so that no window
    is shorter than the model's conditioning and the last one ends with the track.
    """
    window_sec = native_window_sec(config) if window_sec is None else float(window_sec)
    rate = config.sample_rate / config.downsampling_ratio
    hop, sr = config.downsampling_ratio, config.sample_rate
    if duration_sec <= window_sec:
        covered = covering_duration(config, duration_sec)
        n, _, _ = config.seq_lengths(covered)
        return WindowPlan(n, covered, (Window(0, 0, n),), (), sr, hop)
    window_len, _, _ = config.seq_lengths(window_sec)
    overlap = round(overlap_sec * rate)
    if not 1 <= overlap <= window_len / 3:
        raise ValueError(
            f"overlap must be between one latent frame and a third of the window ({window_sec:g} s), "
            f"got {overlap_sec:g} s"
        )
    track_len = math.ceil(duration_sec * sr / hop - 1e-9)
    stride = window_len - overlap
    count = 1 + math.ceil((track_len - window_len) / stride)
    starts = [round(i * (track_len - window_len) / (count - 1)) for i in range(count)]
    windows = tuple(Window(i, s, window_len) for i, s in enumerate(starts))
    fades = []
    for left, right in zip(windows[:-1], windows[1:], strict=True):
        fade = min(overlap, left.end - right.start)
        centre = (right.start + left.end) / 2
        fades.append((centre - fade / 2, centre + fade / 2))
    for (_, stop), (start, _) in zip(fades[:-1], fades[1:], strict=True):
        if start < stop:
            raise ValueError(f"fades overlap ({stop} > {start}): the overlap is too long for the window")
    return WindowPlan(track_len, window_sec, windows, tuple(fades), sr, hop)


def track_noise(plan: WindowPlan, latent_dim: int, seeds: list[int]) -> Tensor:
    """(C, track_len) noise: each frame takes the noise of the window weighing most there, drawn from
    that window's own seed, so a window's noise depends only on its seed."""
    if len(seeds) != len(plan.windows):
        raise ValueError(f"need one seed per window: {len(seeds)} seeds for {len(plan.windows)} windows")
    draws = [
        torch.randn((latent_dim, w.length), generator=torch.Generator().manual_seed(int(s)))
        for w, s in zip(plan.windows, seeds, strict=True)
    ]
    if plan.single:
        return draws[0]
    owner = plan.latent_weights().argmax(dim=0)
    noise = torch.empty((latent_dim, plan.track_len))
    for w, draw in zip(plan.windows, draws, strict=True):
        frames = (owner == w.index).nonzero().squeeze(1)
        noise[:, frames] = draw[:, frames - w.start]
    return noise


def equal_power_join(plan: WindowPlan, clips: Tensor, length: int) -> Tensor:
    """Join independently generated window audio (K, channels, window_len * hop) into (channels, length)
    with equal-power gains sqrt(weight): uncorrelated windows keep their power through every fade."""
    out = torch.zeros((clips.shape[1], plan.track_len * plan.hop), dtype=clips.dtype)
    for w, clip in zip(plan.windows, clips, strict=True):
        a, b = w.start * plan.hop, w.end * plan.hop
        out[:, a:b] += clip[:, : b - a] * plan.window_gains(w.index, a, b).to(clips.dtype)
    return out[:, :length]
