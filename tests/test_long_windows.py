"""Windows over long tracks: planning, the join maths on known signals, and the generator path."""

from __future__ import annotations

import math

import pytest
import torch
from gen_helpers import tiny_features

from thinksound import Generator, euler, synthesize
from thinksound.config import THINKSOUND, TINY
from thinksound.long_form import decode_track, default_window_seeds, joint_euler, synthesize_windows
from thinksound.windows import (
    covering_duration,
    equal_power_join,
    native_window_sec,
    plan_windows,
    track_noise,
    window_seed,
)

HOP, SR = 2048, 44100


@pytest.fixture(scope="module")
def gen() -> Generator:
    return Generator.from_preset("tiny", seed=0)


def test_native_window_is_the_published_nominal_length() -> None:
    assert native_window_sec(THINKSOUND) == native_window_sec(TINY) == 9.0
    # The published latent, CLIP and sync lengths are those of 9 s.
    assert THINKSOUND.seq_lengths(9.0) == (THINKSOUND.dit.latent_seq_len, 72, 216)


@pytest.mark.parametrize("duration", [9.25, 9.5, 12.0, 61.0, 180.0, 600.0])
@pytest.mark.parametrize("overlap", [0.5, 1.0, 2.0])
def test_plan_covers_the_track_with_full_windows(duration: float, overlap: float) -> None:
    plan = plan_windows(TINY, duration, overlap_sec=overlap)
    assert plan.track_len * HOP >= duration * SR > (plan.track_len - 1) * HOP
    assert len(plan.windows) >= 2 and {w.length for w in plan.windows} == {194}
    assert plan.windows[0].start == 0 and plan.windows[-1].end == plan.track_len
    for left, right in zip(plan.windows[:-1], plan.windows[1:], strict=True):
        assert left.end - right.start >= round(overlap * SR / HOP)
    # Fewest windows: one fewer would leave an overlap shorter than asked.
    k = len(plan.windows)
    if k > 2:
        assert (plan.track_len - 194) / (k - 2) > 194 - round(overlap * SR / HOP)
    weights = plan.latent_weights()
    assert torch.allclose(weights.sum(0), torch.ones(plan.track_len, dtype=torch.float64), atol=1e-12)
    for w, row in zip(plan.windows, weights, strict=True):
        assert row[: w.start].abs().sum() == 0 and row[w.end :].abs().sum() == 0
    # At most two windows are audible anywhere.
    assert ((weights > 0).sum(0) <= 2).all()


def test_short_video_is_one_window_at_its_covering_duration() -> None:
    for duration in (1.0, 2.0, 8.75, 9.0):
        plan = plan_windows(TINY, duration)
        assert plan.single and plan.window_sec == covering_duration(TINY, duration)
        assert plan.track_len == TINY.seq_lengths(plan.window_sec)[0]
        assert torch.equal(plan.latent_weights(), torch.ones(1, plan.track_len, dtype=torch.float64))
    assert covering_duration(TINY, 2.0) == 2.0 + HOP / SR


def test_plan_rejects_an_overlap_too_long_for_the_window() -> None:
    with pytest.raises(ValueError, match="overlap"):
        plan_windows(TINY, 30.0, overlap_sec=4.0)
    with pytest.raises(ValueError, match="overlap"):
        plan_windows(TINY, 30.0, overlap_sec=0.0)


def test_window_seeds() -> None:
    assert window_seed(1234, 0) == 1234
    seeds = [window_seed(1234, i) for i in range(50)]
    assert len(set(seeds)) == 50 and all(0 <= s < 2**63 for s in seeds)
    assert window_seed(1235, 1) != seeds[1]
    plan = plan_windows(TINY, 30.0)
    noise = track_noise(plan, 64, default_window_seeds(plan, 7))
    # Each window's own frames hold its own draw: the middle of window 1 is window 1's seed's noise.
    w = plan.windows[1]
    draw = torch.randn((64, w.length), generator=torch.Generator().manual_seed(window_seed(7, 1)))
    middle = slice(w.start + 60, w.start + 120)
    assert torch.equal(noise[:, middle], draw[:, 60:120])


def test_a_constant_velocity_keeps_a_constant_track_constant() -> None:
    plans = [plan_windows(TINY, 30.0), plan_windows(TINY, 12.0)]
    tracks = [torch.full((4, p.track_len), 0.25) for p in plans]
    out = joint_euler(lambda t, x: torch.full_like(x, 0.5), tracks, plans, steps=8)
    for track in out:
        assert torch.allclose(track, torch.full_like(track, 0.25 - 0.5), atol=1e-6)


def test_joint_sampling_of_windows_equals_sampling_the_whole_track() -> None:
    """With a velocity that does not depend on the window, blending changes nothing."""

    def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(3 * x) * t[:, None, None] - 0.3 * x

    plans = [plan_windows(TINY, 61.0), plan_windows(TINY, 9.5, overlap_sec=0.5)]
    g = torch.Generator().manual_seed(0)
    tracks = [torch.randn((8, p.track_len), generator=g) for p in plans]
    joint = joint_euler(field, tracks, plans, steps=12)
    for track, got in zip(tracks, joint, strict=True):
        whole = euler(field, track.unsqueeze(0), steps=12)[0]
        assert (got - whole).abs().max() < 1e-5


def test_joint_sampling_blends_window_velocities_over_the_fade_only() -> None:
    """A velocity equal to the window's index shows which window rules where."""
    plan = plan_windows(TINY, 20.0)
    track = torch.zeros((1, plan.track_len))
    out = joint_euler(
        lambda t, x: torch.arange(x.shape[0], dtype=x.dtype)[:, None, None].expand_as(x),
        [track],
        [plan],
        steps=1,
    )[0][0]
    (a, b), (c, _) = plan.fades[:2]
    assert torch.all(out[: math.floor(a)] == 0) and torch.all(out[math.ceil(b) : math.floor(c)] == -1)
    ramp = -out[math.ceil(a) : math.floor(b)]
    assert torch.all(ramp.diff() > 0) and 0 < ramp.min() and ramp.max() < 1


def test_crossfade_is_equal_power_on_uncorrelated_noise() -> None:
    plan = plan_windows(TINY, 20.0, overlap_sec=1.0)
    length = plan.track_len * HOP
    g = torch.Generator().manual_seed(3)
    clips = torch.randn((len(plan.windows), 16, plan.window_len * HOP), generator=g)
    joined = equal_power_join(plan, clips, length)
    a, b = (x * HOP for x in plan.fades[0])
    fade = joined[:, math.ceil(a) : math.floor(b)]
    for part in fade.chunk(8, dim=-1):
        assert abs(part.pow(2).mean().item() - 1.0) < 0.05
    # A linear crossfade would dip to half the power in the middle: the test can tell the difference.
    middle = (math.ceil(a) + math.floor(b)) // 2
    linear = 0.5 * (clips[0][:, middle] + clips[1][:, middle - plan.windows[1].start * HOP])
    assert linear.pow(2).mean() < 0.8


def test_chunked_decode_equals_decoding_the_whole_track(gen: Generator) -> None:
    latents = torch.randn((64, 150), generator=torch.Generator().manual_seed(1))
    whole = gen.decode(latents.unsqueeze(0))[0]
    chunked = decode_track(gen.decode, latents, chunk=48, context=32)
    assert chunked.shape == whole.shape == (2, 150 * HOP)
    # Float rounding only (measured 3e-5, the same with 64 frames of context) ...
    assert (chunked - whole).abs().max() / whole.abs().max() < 2e-4
    # ... while too little context is visibly wrong.
    short = decode_track(gen.decode, latents, chunk=48, context=4)
    assert (short - whole).abs().max() / whole.abs().max() > 1e-2
    assert torch.equal(
        decode_track(gen.decode, latents[:, :100], chunk=100), gen.decode(latents[None, :, :100])[0]
    )


@pytest.mark.parametrize("join", ["multidiffusion", "crossfade"])
def test_a_video_shorter_than_one_window_gets_todays_audio(gen: Generator, join: str) -> None:
    features = tiny_features(2, seed=4)
    plan = plan_windows(TINY, 2.0)
    today = synthesize(gen, features, duration_sec=plan.window_sec, seeds=[5, 6], steps=2)
    windowed = synthesize_windows(gen, features, [plan, plan], [[5], [6]], join=join, steps=2)
    assert torch.equal(torch.stack(windowed), today)


@pytest.mark.parametrize("join", ["multidiffusion", "crossfade"])
def test_long_items_batch_together_and_keep_their_audio_alone(gen: Generator, join: str) -> None:
    plans = [plan_windows(TINY, 12.0), plan_windows(TINY, 10.0)]
    counts = [len(p.windows) for p in plans]
    features = tiny_features(sum(counts), clip_len=72, sync_len=216, seed=2)
    seeds = [default_window_seeds(p, s) for p, s in zip(plans, (10, 11), strict=True)]
    both = synthesize_windows(gen, features, plans, seeds, join=join, steps=2)
    for audio, plan in zip(both, plans, strict=True):
        assert audio.shape == (2, plan.track_len * HOP) and torch.isfinite(audio).all()
    alone = synthesize_windows(
        gen, {k: v[counts[0] :] for k, v in features.items()}, plans[1:], seeds[1:], join=join, steps=2
    )[0]
    assert (both[1] - alone).abs().max() / alone.abs().max() < 1e-4


def test_synthesize_windows_rejects_mixed_window_lengths(gen: Generator) -> None:
    with pytest.raises(ValueError, match="duration"):
        synthesize_windows(
            gen, tiny_features(3), [plan_windows(TINY, 2.0), plan_windows(TINY, 12.0)], [[1], [2, 3]], steps=1
        )
    with pytest.raises(ValueError, match="join"):
        synthesize_windows(gen, tiny_features(1), [plan_windows(TINY, 2.0)], [[1]], join="linear", steps=1)


def test_the_streamed_crossfade_is_the_whole_join(gen: Generator) -> None:
    from thinksound.long_form import iter_equal_power_join

    plan = plan_windows(TINY, 20.0, overlap_sec=1.0)
    latents = torch.randn((len(plan.windows), 64, plan.window_len), generator=torch.Generator().manual_seed(5))
    pieces = list(iter_equal_power_join(lambda x: gen.decode(x), latents, plan))
    # One piece per window, each final once the next window has started.
    assert len(pieces) == len(plan.windows)
    whole = equal_power_join(plan, gen.decode(latents), plan.track_len * HOP)
    assert torch.equal(torch.cat(pieces, dim=-1), whole)
