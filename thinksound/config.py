"""Typed configuration of the ThinkSound generator, named presets, and the one conversion
from the original JSON model config.

The original hard-codes several widths (MetaCLIP text tokens are 1024 wide, T5 tokens 2048, the text
sequence is 77 + 77 tokens). Here they are config fields whose defaults are the original values, so
that the ``tiny`` preset can use narrow features that match the tiny feature extractors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DiTConfig:
    """The MM-DiT (the original ``MMmodule`` with ``v2=True`` and every variant flag off)."""

    latent_dim: int = 64
    clip_dim: int = 1024
    sync_dim: int = 768
    # Width of the T5 tokens; the original calls it text_dim and requires it to equal the T5 width.
    text_dim: int = 2048
    # Width of the MetaCLIP text tokens and of the pooled global text feature (1024 in the original).
    metaclip_text_dim: int = 1024
    text_seq_len: int = 77
    hidden_dim: int = 1024
    depth: int = 21
    fused_depth: int = 14
    num_heads: int = 16
    mlp_ratio: float = 4.0
    # SwiGLU hidden widths are rounded up to a multiple of this (256 in the original).
    mlp_multiple_of: int = 256
    kernel_size: int = 3
    sync_kernel: int = 7
    # Nominal sequence lengths (the original's latent/clip/sync_seq_len). None means "take them from
    # the inputs" when no duration is given.
    latent_seq_len: int | None = 194
    clip_seq_len: int | None = 72
    sync_seq_len: int | None = 216

    def __post_init__(self) -> None:
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head width {self.head_dim} must be even for RoPE")
        if not 0 <= self.fused_depth < self.depth:
            raise ValueError(f"need 0 <= fused_depth < depth, got {self.fused_depth=} {self.depth=}")
        if self.metaclip_text_dim > self.text_dim:
            raise ValueError(
                f"MetaCLIP text tokens ({self.metaclip_text_dim}) are zero-padded to the T5 width "
                f"({self.text_dim}), so they cannot be wider"
            )
        if self.kernel_size % 2 == 0 or self.sync_kernel % 2 == 0:
            raise ValueError("convolution kernels must be odd to keep sequence lengths")

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    @property
    def joint_depth(self) -> int:
        return self.depth - self.fused_depth


@dataclass(frozen=True)
class VAEConfig:
    """The Oobleck autoencoder with the ``vae`` bottleneck (stable-audio 2.0 VAE)."""

    io_channels: int = 2
    channels: int = 128
    c_mults: tuple[int, ...] = (1, 2, 4, 8, 16)
    strides: tuple[int, ...] = (2, 4, 4, 8, 8)
    latent_dim: int = 64

    def __post_init__(self) -> None:
        if len(self.c_mults) != len(self.strides):
            raise ValueError(f"c_mults and strides differ in length: {self.c_mults} vs {self.strides}")
        if any(s % 2 for s in self.strides):
            raise ValueError(f"strides must be even so decoding multiplies lengths exactly: {self.strides}")

    @property
    def downsampling_ratio(self) -> int:
        ratio = 1
        for s in self.strides:
            ratio *= s
        return ratio


@dataclass(frozen=True)
class GeneratorConfig:
    """DiT + VAE + the audio and feature-rate constants that tie durations to sequence lengths."""

    dit: DiTConfig = field(default_factory=DiTConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    sample_rate: int = 44100
    clip_fps: int = 8
    sync_tokens_per_sec: int = 24

    def __post_init__(self) -> None:
        if self.dit.latent_dim != self.vae.latent_dim:
            raise ValueError(f"DiT latent_dim {self.dit.latent_dim} != VAE latent_dim {self.vae.latent_dim}")

    @property
    def downsampling_ratio(self) -> int:
        return self.vae.downsampling_ratio

    @property
    def latent_dim(self) -> int:
        return self.dit.latent_dim

    @property
    def clip_dim(self) -> int:
        return self.dit.clip_dim

    @property
    def sync_dim(self) -> int:
        return self.dit.sync_dim

    @property
    def metaclip_text_dim(self) -> int:
        return self.dit.metaclip_text_dim

    @property
    def t5_dim(self) -> int:
        return self.dit.text_dim

    @property
    def text_seq_len(self) -> int:
        return self.dit.text_seq_len

    def seq_lengths(self, duration_sec: float) -> tuple[int, int, int]:
        """(latent N, CLIP Lc, sync Ls) for a duration, by predict.py's formulas.

        N uses Python's round (halves to even); Lc and Ls use int(duration), so a fractional
        duration keeps the CLIP/sync lengths of its integer part while N grows.
        """
        d = float(duration_sec)
        if d <= 0:
            raise ValueError(f"duration_sec must be positive, got {duration_sec}")
        n = round(self.sample_rate / self.downsampling_ratio * d)
        return n, self.clip_fps * int(d), self.sync_tokens_per_sec * int(d)

    def fingerprint(self) -> str:
        """A short stable hash of every field, for cache keys."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _tuple(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in v)


def from_original_json(config: Mapping[str, Any]) -> GeneratorConfig:
    """Convert a model config in the original JSON format (``thinksound.json``) to a GeneratorConfig.

    This is the only place that knows the original layout. Unsupported variants raise ValueError.
    """
    model = config["model"]
    diffusion = model["diffusion"]
    if diffusion.get("type") != "mmdit":
        raise ValueError(f"only the mmdit diffusion model is supported, got {diffusion.get('type')!r}")
    d = diffusion["config"]
    for flag in ("use_inpaint", "use_mlp", "cross_attend", "add_video", "triple_fusion", "gated_video"):
        if d.get(flag, False):
            raise ValueError(f"the original's {flag}=True variant is not supported")
    if not d.get("v2", False):
        raise ValueError("only the v2 MM-DiT is supported")
    dit = DiTConfig(
        latent_dim=int(d["latent_dim"]),
        clip_dim=int(d["clip_dim"]),
        sync_dim=int(d["sync_dim"]),
        text_dim=int(d["text_dim"]),
        metaclip_text_dim=int(d.get("metaclip_text_dim", 1024)),
        text_seq_len=int(d.get("text_seq_len", 77)),
        hidden_dim=int(d["hidden_dim"]),
        depth=int(d["depth"]),
        fused_depth=int(d["fused_depth"]),
        num_heads=int(d["num_heads"]),
        mlp_ratio=float(d.get("mlp_ratio", 4.0)),
        kernel_size=int(d.get("kernel_size", 7)),
        sync_kernel=int(d.get("sync_kernel", 7)),
        latent_seq_len=_opt_int(d.get("latent_seq_len")),
        clip_seq_len=_opt_int(d.get("clip_seq_len")),
        sync_seq_len=_opt_int(d.get("sync_seq_len")),
    )
    pre = model["pretransform"]
    if pre.get("type") != "autoencoder":
        raise ValueError(f"only the autoencoder pretransform is supported, got {pre.get('type')!r}")
    pc = pre["config"]
    enc, dec = pc["encoder"], pc["decoder"]
    if enc.get("type") != "oobleck" or dec.get("type") != "oobleck":
        raise ValueError("only Oobleck encoder/decoder are supported")
    if pc.get("bottleneck", {}).get("type") != "vae":
        raise ValueError("only the 'vae' bottleneck is supported")
    ec, dc = enc["config"], dec["config"]
    if not ec.get("use_snake", False) or not dc.get("use_snake", False):
        raise ValueError("only use_snake=True is supported")
    if dc.get("final_tanh", True) or ec.get("antialias_activation") or dc.get("antialias_activation"):
        raise ValueError("final_tanh / antialias variants are not supported")
    if dc.get("use_nearest_upsample"):
        raise ValueError("use_nearest_upsample is not supported")
    if _tuple(ec["c_mults"]) != _tuple(dc["c_mults"]) or _tuple(ec["strides"]) != _tuple(dc["strides"]):
        raise ValueError("encoder and decoder must mirror each other")
    latent_dim = int(pc["latent_dim"])
    if int(ec["latent_dim"]) != 2 * latent_dim or int(dc["latent_dim"]) != latent_dim:
        raise ValueError("the vae bottleneck needs encoder latent_dim == 2 * decoder latent_dim")
    vae = VAEConfig(
        io_channels=int(pc.get("io_channels", ec.get("in_channels", 2))),
        channels=int(ec["channels"]),
        c_mults=_tuple(ec["c_mults"]),
        strides=_tuple(ec["strides"]),
        latent_dim=latent_dim,
    )
    cfg = GeneratorConfig(dit=dit, vae=vae, sample_rate=int(config.get("sample_rate", 44100)))
    ratio = pc.get("downsampling_ratio")
    if ratio is not None and int(ratio) != cfg.downsampling_ratio:
        raise ValueError(f"downsampling_ratio {ratio} disagrees with strides {vae.strides}")
    return cfg


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


THINKSOUND = GeneratorConfig()

# A few-hundred-thousand-parameter model for tests and offline demos. Its feature widths match the
# tiny feature extractors (64 everywhere). Randomly initialised: its audio is noise.
TINY = GeneratorConfig(
    dit=DiTConfig(
        clip_dim=64,
        sync_dim=64,
        text_dim=64,
        metaclip_text_dim=64,
        hidden_dim=32,
        depth=2,
        fused_depth=1,
        num_heads=2,
        mlp_multiple_of=32,
        latent_seq_len=None,
        clip_seq_len=None,
        sync_seq_len=None,
    ),
    vae=VAEConfig(channels=4),
)

PRESETS: dict[str, GeneratorConfig] = {"thinksound": THINKSOUND, "tiny": TINY}


def preset(name: str) -> GeneratorConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}") from None
