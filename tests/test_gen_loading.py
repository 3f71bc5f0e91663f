"""Loading checkpoints: local directories, .ckpt and safetensors, strict keys, the VAE override."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from thinksound import Generator
from thinksound.loading import read_state_dict


@pytest.fixture(scope="module")
def source() -> Generator:
    return Generator.from_preset("tiny", seed=3)


def _write_checkpoints(tmp: Path, gen: Generator, vae_gen: Generator) -> None:
    torch.save(gen.state_dict(), tmp / "thinksound_light.ckpt")
    lightning = {
        "state_dict": {
            **{f"autoencoder.{k}": v for k, v in vae_gen.vae.state_dict().items()},
            **{f"autoencoder_ema.{k}": torch.zeros(1) for k in list(vae_gen.vae.state_dict())[:3]},
            "discriminator.conv.weight": torch.zeros(2),
        },
        "epoch": 7,
    }
    torch.save(lightning, tmp / "vae.ckpt")


def test_from_pretrained_local_dir(tmp_path: Path, source: Generator) -> None:
    vae_source = Generator.from_preset("tiny", seed=4)
    _write_checkpoints(tmp_path, source, vae_source)
    gen = Generator.from_pretrained(tmp_path, config="tiny")
    assert not gen.is_random_init and gen.preset_name == "tiny"
    for k, v in gen.dit.state_dict().items():
        assert torch.equal(v, source.dit.state_dict()[k]), k
    # vae.ckpt overrides the VAE tensors of the main checkpoint.
    for k, v in gen.vae.state_dict().items():
        assert torch.equal(v, vae_source.vae.state_dict()[k]), k
    assert gen.dit.t_embed.freqs.device.type == "cpu" and torch.isfinite(gen.dit.t_embed.freqs).all()
    again = Generator.from_pretrained(tmp_path, config="tiny")
    assert again.version == gen.version != source.version


def test_from_pretrained_safetensors_without_vae(tmp_path: Path, source: Generator) -> None:
    save_file(source.state_dict(), str(tmp_path / "model.safetensors"))
    gen = Generator.from_pretrained(tmp_path, config="tiny", main_filename="model.safetensors", vae_filename=None)
    x, t = torch.randn(1, 64, 22), torch.tensor([0.4])
    feats = {"t5_features": torch.randn(1, 77, 64)}
    assert torch.equal(gen.velocity(x, t, feats, 5.0, 1.0), source.velocity(x, t, feats, 5.0, 1.0))


def test_legacy_pickle_format_is_read(tmp_path: Path, source: Generator) -> None:
    torch.save(source.state_dict(), tmp_path / "thinksound_light.ckpt", _use_new_zipfile_serialization=False)
    gen = Generator.from_pretrained(tmp_path, config="tiny", vae_filename=None)
    assert torch.equal(gen.dit.empty_clip_feat, source.dit.empty_clip_feat)


def test_strict_loading_reports_keys(tmp_path: Path, source: Generator) -> None:
    sd = dict(source.state_dict())
    sd.pop("model.model.empty_clip_feat")
    sd["model.model.extra"] = torch.zeros(1)
    torch.save(sd, tmp_path / "thinksound_light.ckpt")
    with pytest.raises(ValueError, match=r"1 missing \['model.model.empty_clip_feat'\].*1 unexpected"):
        Generator.from_pretrained(tmp_path, config="tiny", vae_filename=None)


def test_missing_file_and_non_tensor_state_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Generator.from_pretrained(tmp_path, config="tiny")
    torch.save({"state_dict": {"w": torch.zeros(1), "obj": Path("x")}}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="flat mapping of tensors"):
        read_state_dict(tmp_path / "bad.ckpt")


def test_load_vae_state_dict_is_strict(source: Generator) -> None:
    gen = Generator.from_preset("tiny", seed=0)
    vae_sd = {f"autoencoder.{k}": v for k, v in source.vae.state_dict().items()}
    vae_sd.pop(next(iter(vae_sd)))
    with pytest.raises(ValueError, match="missing"):
        gen.load_vae_state_dict(vae_sd)
