"""Set A: the generator against outputs of the original ThinkSound code (fp32, CPU)."""

from __future__ import annotations

import pytest
import torch
from gen_helpers import fixture, fixture_features, needs_reference, rel_err, set_a_config

from thinksound import Generator, peak_normalize, sample_euler, to_int16
from thinksound.math import nearest_exact_indices, rope_matrices, rope_table

pytestmark = needs_reference

# Limits sit about 10x above the worst error measured by tools/tolerance_spread.py over 1-4 threads, with
# and without competing load (DiT 7.4e-6, VAE 9.8e-5 on this CPU; another CPU gave 2.5e-5 for the VAE):
# float32 sums change order with threads and instruction sets, while a wiring bug costs 1e-2 or more.
DIT_TOL = 1e-4
VAE_TOL = 1e-3


@pytest.fixture(scope="module")
def gen() -> Generator:
    return Generator.from_original(set_a_config(), fixture("weights"))


def test_tables_match_original(gen: Generator) -> None:
    f = fixture("mmdit_forward_cfg1")
    assert torch.equal(gen.dit.t_embed.freqs, f["debug.t_embed_freqs"])
    assert torch.equal(rope_matrices(rope_table(43, 16)), f["debug.latent_rot"])
    assert torch.equal(rope_matrices(rope_table(16, 16, freq_scaling=43 / 16)), f["debug.clip_rot"])


@pytest.mark.parametrize(
    ("name", "cfg_scale"),
    [
        ("mmdit_forward_cfg1", 1.0),
        ("mmdit_forward_cfg1_noglobal", 1.0),
        ("mmdit_forward_cfg5", 5.0),
        ("mmdit_forward_cfg5_noglobal", 5.0),
        ("mmdit_forward_cfg5_mismatch", 5.0),
    ],
)
@pytest.mark.parametrize("duration_sec", [None, 2.0])
def test_velocity(gen: Generator, name: str, cfg_scale: float, duration_sec: float | None) -> None:
    f = fixture(name)
    flow = gen.velocity(f["in.x"], f["in.t"], fixture_features(f), cfg_scale=cfg_scale, duration_sec=duration_sec)
    assert flow.shape == f["out.flow"].shape
    assert rel_err(flow, f["out.flow"]) < DIT_TOL


def test_preprocessed_conditions(gen: Generator) -> None:
    f = fixture("mmdit_forward_cfg1")
    prepared = gen.prepare(fixture_features(f), batch=1, latent_len=43)
    assert rel_err(prepared.cond.clip, f["debug.preprocessed.clip_f"]) < DIT_TOL
    assert rel_err(prepared.cond.sync, f["debug.preprocessed.sync_f"]) < DIT_TOL
    assert rel_err(prepared.cond.text, f["debug.preprocessed.text_f"]) < DIT_TOL
    assert rel_err(prepared.cond.global_c, f["debug.global_cond_mlp_out"]) < DIT_TOL


@pytest.mark.parametrize("name", ["sampling_euler24_cfg5", "sampling_euler24_cfg5_global"])
def test_sampler(gen: Generator, name: str) -> None:
    f = fixture(name)
    assert torch.equal(torch.linspace(1, 0, 25), f["in.t_schedule"])
    latents = sample_euler(gen, f["in.noise"], fixture_features(f), steps=24, cfg_scale=5.0, duration_sec=2.0)
    assert rel_err(latents, f["out.latents"]) < DIT_TOL


def test_decode_and_int16(gen: Generator) -> None:
    f = fixture("vae_decode")
    audio = gen.decode(f["in.latents"])
    assert audio.shape == (1, 2, 43 * 2048)
    assert rel_err(audio, f["out.audio"]) < VAE_TOL
    # The int16 conversion is checked on the reference's own float audio, so the decoder's float32
    # noise (a few LSB) cannot hide a rounding or scaling difference.
    pcm = to_int16(peak_normalize(f["out.audio"], per_item=False))
    assert torch.equal(pcm, f["out.audio_int16"].to(pcm.dtype))


def test_decode_randn(gen: Generator) -> None:
    f = fixture("vae_decode_randn")
    assert rel_err(gen.decode(f["in.latents"]), f["out.audio"]) < VAE_TOL


def test_encode_posterior(gen: Generator) -> None:
    f = fixture("vae_encode")
    mean, stdev = gen.encode(f["in.audio"])
    assert rel_err(mean, f["out.mean"]) < VAE_TOL
    assert rel_err(stdev, f["out.stdev"]) < VAE_TOL
    assert rel_err(mean + f["in.eps"] * stdev, f["out.latents_sampled"]) < VAE_TOL


def test_load_vae_state_dict_overrides_vae(gen: Generator) -> None:
    fresh = Generator.from_original(set_a_config(), None)
    vae_sd = dict(fixture("vae_weights"))
    # Other groups of a Lightning VAE checkpoint are ignored.
    vae_sd["autoencoder_ema.encoder.layers.0.bias"] = torch.zeros(1)
    vae_sd["discriminator.w"] = torch.zeros(1)
    fresh.load_vae_state_dict(vae_sd)
    f = fixture("vae_decode_randn")
    assert rel_err(fresh.decode(f["in.latents"]), f["out.audio"]) < VAE_TOL


@pytest.mark.parametrize(("src", "dst"), [(216, 194), (48, 43), (240, 215), (216, 207), (40, 43), (8, 22)])
def test_nearest_exact_indices_match_interpolate(src: int, dst: int) -> None:
    x = torch.arange(src, dtype=torch.float32)[None, None]
    ref = torch.nn.functional.interpolate(x, size=dst, mode="nearest-exact")[0, 0].long()
    assert torch.equal(nearest_exact_indices(src, dst), ref)
