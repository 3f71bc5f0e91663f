"""Behaviour of the generator beyond the original, on the tiny random preset (its audio is noise)."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch
from gen_helpers import tiny_features

from thinksound import Generator, euler, peak_normalize, sample_euler, synthesize, to_int16
from thinksound.synthesis import item_noise


@pytest.fixture(scope="module")
def gen() -> Generator:
    return Generator.from_preset("tiny", seed=0)


def test_tiny_preset_identity(gen: Generator, caplog: pytest.LogCaptureFixture) -> None:
    assert gen.is_random_init and gen.preset_name == "tiny"
    assert gen.config.sample_rate == 44100 and gen.config.downsampling_ratio == 2048
    assert (gen.config.clip_dim, gen.config.sync_dim, gen.config.metaclip_text_dim, gen.config.t5_dim) == (64,) * 4
    counts = gen.parameter_count()
    assert 100_000 < counts["dit"] + counts["vae"] < 1_000_000
    with caplog.at_level(logging.WARNING, logger="thinksound"):
        again = Generator.from_preset("tiny", seed=0)
    assert "NOISE" in caplog.text
    assert again.version == gen.version
    assert Generator.from_preset("tiny", seed=1).version != gen.version
    for (name, a), b in zip(gen.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_random_init_does_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    Generator.from_preset("tiny", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_synthesize_shape_and_finiteness(gen: Generator) -> None:
    audio = synthesize(gen, tiny_features(2), duration_sec=2.0, seeds=[1, 2], steps=4)
    assert audio.shape == (2, 2, 43 * 2048) and audio.dtype == torch.float32
    assert torch.isfinite(audio).all()
    assert not torch.allclose(audio[0], audio[1])


def test_item_result_does_not_depend_on_batch(gen: Generator) -> None:
    feats = tiny_features(3, seed=7)
    batch = synthesize(gen, feats, duration_sec=2.0, seeds=[11, 12, 13], steps=4)
    alone = synthesize(gen, {k: v[1:2] for k, v in feats.items()}, duration_sec=2.0, seeds=[12], steps=4)
    rel = (batch[1] - alone[0]).abs().max() / alone.abs().max()
    assert rel < 1e-4
    noise = item_noise(gen, [12, 11], latent_len=43)
    assert torch.equal(noise[0], item_noise(gen, [12], latent_len=43)[0])


def test_missing_video_uses_learned_empty_features(gen: Generator) -> None:
    dit = gen.dit
    feats = tiny_features(2)
    text_only = {k: v for k, v in feats.items() if k in ("metaclip_text_features", "t5_features")}
    explicit = dict(text_only)
    explicit["metaclip_features"] = dit.empty_clip_feat[None].expand(2, 16, -1)
    explicit["sync_features"] = dit.empty_sync_feat[None].expand(2, 48, -1)
    x, t = torch.randn(2, 64, 43), torch.tensor([0.3, 0.7])
    a = gen.velocity(x, t, text_only, cfg_scale=5.0, duration_sec=2.0)
    assert torch.equal(a, gen.velocity(x, t, explicit, cfg_scale=5.0, duration_sec=2.0))
    assert not torch.allclose(a, gen.velocity(x, t, feats, cfg_scale=5.0, duration_sec=2.0))


def test_missing_text_uses_empty_text_features(gen: Generator) -> None:
    dit = gen.dit
    feats = tiny_features(1)
    video_only = {k: v for k, v in feats.items() if k in ("metaclip_features", "sync_features")}
    explicit = dict(video_only)
    explicit["metaclip_text_features"] = dit.empty_string_feat[None]
    explicit["t5_features"] = dit.empty_t5_feat[None]
    x, t = torch.randn(1, 64, 43), torch.tensor([0.5])
    assert torch.equal(gen.velocity(x, t, video_only, 5.0, 2.0), gen.velocity(x, t, explicit, 5.0, 2.0))
    # No condition at all: conditional and unconditional branches agree, so CFG changes nothing.
    unc1 = gen.velocity(x, t, {}, cfg_scale=1.0, duration_sec=2.0)
    unc5 = gen.velocity(x, t, {}, cfg_scale=5.0, duration_sec=2.0)
    assert torch.allclose(unc1, unc5, atol=1e-5)


def test_short_sync_is_zero_padded_and_long_clip_truncated(gen: Generator) -> None:
    """Pins the original's safe_cat: a 2 s extract has 40 sync tokens for a nominal 48 (zero-padded
    at the end) and a 9.6 s extract has 76 CLIP frames for a nominal 72 (first 72 kept)."""
    feats = tiny_features(1, sync_len=40, clip_len=20)
    padded = dict(feats)
    padded["sync_features"] = torch.cat([feats["sync_features"], torch.zeros(1, 8, 64)], dim=1)
    padded["metaclip_features"] = feats["metaclip_features"][:, :16]
    x, t = torch.randn(1, 64, 43), torch.tensor([0.5])
    assert torch.equal(gen.velocity(x, t, feats, 5.0, 2.0), gen.velocity(x, t, padded, 5.0, 2.0))


@pytest.mark.parametrize(("duration", "n"), [(1.0, 22), (2.5, 54), (3.3, 71)])
def test_fractional_durations(gen: Generator, duration: float, n: int) -> None:
    _, lc, ls = gen.config.seq_lengths(duration)
    audio = synthesize(gen, tiny_features(1, clip_len=lc, sync_len=ls), duration_sec=duration, seeds=[0], steps=2)
    assert audio.shape == (1, 2, n * 2048)


def test_duration_below_one_second_is_rejected(gen: Generator) -> None:
    with pytest.raises(ValueError, match="positive"):
        synthesize(gen, tiny_features(1), duration_sec=0.5, seeds=[0], steps=1)


def test_latent_length_must_match_duration(gen: Generator) -> None:
    with pytest.raises(ValueError, match="nominal"):
        gen.velocity(torch.randn(1, 64, 40), torch.tensor([0.5]), tiny_features(1), 5.0, 2.0)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_precisions_stay_close(gen: Generator, precision: str) -> None:
    feats = tiny_features(1)
    noise = torch.randn(1, 64, 43, generator=torch.Generator().manual_seed(0))
    ref = sample_euler(gen, noise, feats, steps=4, duration_sec=2.0)
    low = sample_euler(gen, noise, feats, steps=4, duration_sec=2.0, precision=precision)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    rel = ((low - ref).abs().max() / ref.abs().max()).item()
    assert 0 < rel < 5e-2


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_synthesize_low_precision_returns_float32_audio(gen: Generator, precision: str) -> None:
    audio = synthesize(gen, tiny_features(1), duration_sec=1.0, seeds=[3], steps=2, precision=precision)
    ref = synthesize(gen, tiny_features(1), duration_sec=1.0, seeds=[3], steps=2)
    assert audio.dtype == torch.float32 and audio.shape == ref.shape and torch.isfinite(audio).all()
    assert ((audio - ref).abs().max() / ref.abs().max()).item() < 0.1


def test_unknown_precision_is_rejected(gen: Generator) -> None:
    with pytest.raises(ValueError, match="precision"):
        synthesize(gen, tiny_features(1), duration_sec=2.0, seeds=[0], steps=1, precision="int8")


def test_enable_compile_wires_the_step_function() -> None:
    gen = Generator.from_preset("tiny", seed=0)
    plain = gen._predict
    gen.enable_compile(dynamic=False)
    assert gen._predict is not plain
    assert getattr(gen._predict, "_torchdynamo_orig_callable", None) is not None


@pytest.mark.slow
def test_compiled_sampler_matches_eager() -> None:
    gen = Generator.from_preset("tiny", seed=0)
    feats, noise = tiny_features(1), torch.randn(1, 64, 43, generator=torch.Generator().manual_seed(2))
    eager = sample_euler(gen, noise, feats, steps=2, duration_sec=2.0)
    gen.enable_compile(dynamic=False)
    compiled = sample_euler(gen, noise, feats, steps=2, duration_sec=2.0)
    assert ((compiled - eager).abs().max() / eager.abs().max()).item() < 1e-5


def test_euler_integrates_a_known_field() -> None:
    # dx/dt = 2t with x(1) = 1 gives x(0) = 0; Euler from t=1 with 4 steps: sum of 2t*dt over t in {1,.75,.5,.25}.
    x = euler(lambda t, x: 2 * t[:, None], torch.ones(1, 1), steps=4)
    assert torch.allclose(x, torch.tensor([[1 - 2 * (1 + 0.75 + 0.5 + 0.25) * 0.25]]))


def test_peak_normalize_per_item_and_batch_wide() -> None:
    audio = torch.tensor([[[0.5, -1.0]], [[0.1, 0.05]], [[0.0, 0.0]]])
    per_item = peak_normalize(audio)
    assert torch.allclose(per_item[:, 0].abs().amax(dim=1), torch.tensor([1.0, 1.0, 0.0]))
    batch = peak_normalize(audio, per_item=False)
    assert torch.allclose(batch, audio / 1.0) and batch[1].abs().max() == pytest.approx(0.1)
    pcm = to_int16(torch.tensor([0.99999, -0.5, 2.0, -0.00001]))
    assert pcm.tolist() == [32766, -16383, 32767, 0]


def test_package_imports_no_pipeline_libraries() -> None:
    code = (
        "import sys, thinksound, thinksound.synthesis, thinksound.loading;"
        "bad = [m for m in ('prefect', 'duckdb', 'minio') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
