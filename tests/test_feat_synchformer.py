"""Synchformer: fixture parity with the original code, and the published checkpoint's key manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from thinksound.features import Synchformer

REF = Path(__file__).resolve().parents[2] / "shared" / "reference"
FIX = REF / "fixtures" / "synchformer"


@pytest.fixture(scope="module")
def fixture_io() -> dict[str, torch.Tensor]:
    return load_file(str(FIX / "synchformer_io.safetensors"))


@pytest.fixture(scope="module")
def small() -> Synchformer:
    meta = json.loads((FIX / "meta.json").read_text())["resolved_vit_cfg"]
    enc = Synchformer(embed_dim=meta["EMBED_DIM"], depth=meta["DEPTH"], num_heads=meta["NUM_HEADS"]).eval()
    enc.load_state_dict(load_file(str(FIX / "weights.safetensors")))
    return enc


def test_fixture_parity(small, fixture_io):
    with torch.no_grad():
        out = small.encode(fixture_io["in.video"])
    ref = fixture_io["out.sync_features"]
    assert out.shape == ref.shape == (1, 16, 64)
    assert (out - ref).abs().max().item() <= 1e-6


def test_fixture_parity_per_segment_and_chunked(small, fixture_io):
    video = fixture_io["in.video"]
    with torch.no_grad():
        direct = small(video.unfold(1, 16, 8).permute(0, 1, 5, 2, 3, 4))  # (B, S, 8, D)
        chunked = small.encode(video, segments_per_batch=1)
    assert (direct - fixture_io["out.synchformer_direct"]).abs().max().item() <= 1e-6
    assert (chunked - fixture_io["out.sync_features"]).abs().max().item() <= 1e-6


def test_manifest_keys_and_shapes_full_size():
    manifest = json.loads((REF / "synchformer_state_dict.json").read_text())
    with torch.device("meta"):
        enc = Synchformer()
    sd = enc.state_dict()
    assert len(sd) == manifest["num_keys"] == 238
    assert {k: list(v.shape) for k, v in sd.items()} == {k: v["shape"] for k, v in manifest["tensors"].items()}
    assert sum(p.numel() for p in enc.parameters()) == manifest["params_total"] == 122_440_704
    assert list(enc.buffers()) == []


def test_load_drops_other_branches_and_stays_strict():
    enc = Synchformer(embed_dim=32, depth=1, num_heads=2)
    sd = dict(enc.state_dict())
    sd["afeat_extractor.something.weight"] = torch.zeros(3)
    sd["transformer.layer.0.bias"] = torch.zeros(3)
    enc.load_state_dict(sd)  # other branches are dropped, as the original does
    bad = dict(enc.state_dict())
    bad["vfeat_extractor.head.weight"] = torch.zeros(2, 32)
    with pytest.raises(RuntimeError, match="Unexpected"):
        enc.load_state_dict(bad)
    missing = dict(enc.state_dict())
    del missing["vfeat_extractor.patch_embed.proj.weight"]
    with pytest.raises(RuntimeError, match="Missing"):
        enc.load_state_dict(missing)


@pytest.mark.parametrize(("frames", "segments"), [(16, 1), (23, 1), (24, 2), (40, 4)])
def test_other_sizes_give_segment_major_output(frames, segments):
    torch.manual_seed(0)
    enc = Synchformer(embed_dim=48, depth=1, num_heads=3).eval()
    video = torch.randn(2, frames, 3, 224, 224)
    with torch.no_grad():
        out = enc.encode(video)
        assert out.shape == (2, segments * 8, 48)
        # Segment s of item b is frames [8s, 8s + 16) of that item alone.
        last = enc.encode(video[1:, 8 * (segments - 1) : 8 * (segments - 1) + 16])
    assert (out[1:, -8:] - last).abs().max().item() < 1e-5


def test_too_few_frames_is_an_error():
    enc = Synchformer(embed_dim=32, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="16 frames"):
        enc.encode(torch.zeros(1, 15, 3, 224, 224))
    with pytest.raises(ValueError, match="divisible"):
        Synchformer(embed_dim=30, depth=1, num_heads=4)


def test_load_synchformer_from_pth_with_other_branches(tmp_path, fixture_io):
    from thinksound.features.weights import hub_file, load_synchformer

    sd = load_file(str(FIX / "weights.safetensors"))
    sd["afeat_extractor.blocks.0.norm1.weight"] = torch.ones(4)  # the full Synchformer's audio branch
    torch.save(sd, tmp_path / "synchformer_state_dict.pth")
    # A .pth carries no head count: 64-wide heads are assumed (the published model); the fixture uses 16.
    enc = load_synchformer(tmp_path / "synchformer_state_dict.pth", device=torch.device("cpu"), dtype=torch.float32)
    assert enc.config.embed_dim == 64 and enc.config.depth == 2 and enc.config.num_heads == 1
    assert hub_file("liuhuadai/ThinkSound", default_filename="s.pth") == ("liuhuadai/ThinkSound", "s.pth")
    assert hub_file("hf://o/r/sub/w.pth", default_filename="s.pth") == ("o/r", "sub/w.pth")
    assert hub_file(tmp_path / "synchformer_state_dict.pth", default_filename="s.pth") is None
    with pytest.raises(FileNotFoundError):
        load_synchformer(tmp_path / "missing.pth", device=torch.device("cpu"), dtype=torch.float32)
