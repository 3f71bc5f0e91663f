"""The full ThinkSound architecture matches the published checkpoint's keys and shapes.

Built on the meta device: no 1.4 B-parameter allocation.
"""

from __future__ import annotations

import json

import pytest
from gen_helpers import REFERENCE

from thinksound import Generator, from_original_json
from thinksound.config import THINKSOUND

pytestmark = pytest.mark.skipif(
    not (REFERENCE / "thinksound_state_dict.json").is_file(), reason="reference manifests not found"
)


def _manifest(name: str) -> dict:
    return json.loads((REFERENCE / name).read_text())


def test_state_dict_matches_published_checkpoint() -> None:
    manifest = _manifest("thinksound_state_dict.json")
    gen = Generator.skeleton(json.loads((REFERENCE / "thinksound.json").read_text()))
    ours = {k: list(v.shape) for k, v in gen.state_dict().items()}
    theirs = {k: v["shape"] for k, v in manifest["tensors"].items()}
    assert len(ours) == manifest["num_keys"] == 780
    assert ours == theirs
    # Same order too, so that a re-saved checkpoint lists keys as the original does.
    assert list(ours) == list(theirs)
    assert sum(v.numel() for v in gen.state_dict().values()) == manifest["params_total"]
    assert all(v.dtype.is_floating_point for v in gen.state_dict().values())


def test_no_duration_dependent_keys_and_buffers_not_saved() -> None:
    gen = Generator.skeleton("thinksound")
    keys = set(gen.state_dict())
    assert not any(k.endswith(("latent_rot", "clip_rot", "t_embed.freqs")) for k in keys)


def test_json_conversion_equals_preset() -> None:
    cfg = from_original_json(json.loads((REFERENCE / "thinksound.json").read_text()))
    assert cfg == THINKSOUND
    assert cfg.downsampling_ratio == 2048 and cfg.sample_rate == 44100
    assert (cfg.clip_dim, cfg.sync_dim, cfg.metaclip_text_dim, cfg.t5_dim) == (1024, 768, 1024, 2048)


def test_vae_keys_match_vae_manifest() -> None:
    manifest = _manifest("vae_state_dict.json")
    gen = Generator.skeleton("thinksound")
    ours = {k: list(v.shape) for k, v in gen.vae.state_dict().items()}
    assert ours == {k: v["shape"] for k, v in manifest["tensors"].items()}
    counts = gen.parameter_count()
    assert counts["vae"] == manifest["params_total"] == 156_112_514
    assert counts["dit"] == 1_277_117_632


@pytest.mark.parametrize(("duration", "expected"), [(1.0, (22, 8, 24)), (9.0, (194, 72, 216)), (9.6, (207, 72, 216)),
                                                    (10.0, (215, 80, 240)), (12.0, (258, 96, 288))])
def test_sequence_lengths_per_duration(duration: float, expected: tuple[int, int, int]) -> None:
    assert THINKSOUND.seq_lengths(duration) == expected
    overrides = _manifest("thinksound_state_dict.json")["duration_dependence"][str(duration)]
    o = overrides["diffusion_config_overrides"]
    assert (o["latent_seq_len"], o["clip_seq_len"], o["sync_seq_len"]) == expected
