"""The ThinkSound generator: MM-DiT + Oobleck VAE under the published checkpoint's key names.

``Generator`` holds ``model.model.*`` (the DiT) and ``pretransform.model.*`` (the VAE) exactly as the
published ``thinksound_light.ckpt``. One loaded model serves every duration: nothing in the state dict
depends on it; RoPE tables and resampling indices are built per call.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from thinksound import loading
from thinksound.conditioning import resolve_features, seq_lengths
from thinksound.config import GeneratorConfig, from_original_json, preset
from thinksound.math import timestep_freqs
from thinksound.mmdit import Conditions, MMDiT, SeqLengths
from thinksound.vae import AudioAutoencoder

log = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class _Holder(nn.Module):
    """One level of nesting, so keys read ``model.model.*`` / ``pretransform.model.*``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model


@dataclass(frozen=True)
class Prepared:
    """Per-sample state of one guided sampling run: conditions (stacked [cond; uncond] under CFG)."""

    cond: Conditions
    cfg_scale: float
    lengths: SeqLengths


class Generator(nn.Module):
    """MM-DiT velocity field, CFG, and the VAE; build it with a ``from_*`` constructor."""

    def __init__(self, *, config: GeneratorConfig, preset_name: str = "custom") -> None:
        super().__init__()
        self.config = config
        self.preset_name = preset_name
        self.model = _Holder(MMDiT(config=config.dit))
        self.pretransform = _Holder(AudioAutoencoder(config=config.vae))
        self._weights_id = "uninitialised"
        self._random_init = True
        self._predict: Callable[[Tensor, Tensor, Conditions], Tensor] = self.dit.predict_flow

    # construction

    @classmethod
    def _build_meta(cls, config: GeneratorConfig, preset_name: str) -> Generator:
        with torch.device("meta"):
            return cls(config=config, preset_name=preset_name)

    @classmethod
    def skeleton(cls, config: GeneratorConfig | Mapping[str, Any] | str) -> Generator:
        """The architecture on the meta device, without storage: for inspecting keys and shapes.

        ``config`` is a GeneratorConfig, an original-format JSON dict or a preset name.
        """
        if isinstance(config, str):
            return cls._build_meta(preset(config), config)
        if isinstance(config, Mapping):
            return cls._build_meta(from_original_json(config), "original")
        return cls._build_meta(config, "custom")

    def _finish(self, *, device: str | torch.device, weights_id: str, random_init: bool) -> Generator:
        self._weights_id = weights_id
        self._random_init = random_init
        self.requires_grad_(False)
        self.eval()
        # Non-persistent buffers are not in checkpoints (and are empty after a meta build): rebuild them.
        t_embed = self.dit.t_embed
        t_embed.freqs = timestep_freqs(t_embed.mlp[0].in_features, 1).to(self.device)
        left = [name for name, v in [*self.named_parameters(), *self.named_buffers()] if v.is_meta]
        if left:
            raise RuntimeError(f"tensors left without storage after loading: {left[:8]}")
        self.to(device)
        if random_init:
            log.warning(
                "ThinkSound generator %r is randomly initialised: its audio is NOISE, not a result", self.preset_name
            )
        return self

    @classmethod
    def from_config(
        cls, config: GeneratorConfig, *, seed: int = 0, preset_name: str = "custom", device: str | torch.device = "cpu"
    ) -> Generator:
        """Random weights, deterministic for a seed and independent of the global RNG. Output is noise."""
        gen = cls._build_meta(config, preset_name)
        gen.to_empty(device="cpu")
        loading.init_random_(gen, seed=seed)
        return gen._finish(device=device, weights_id=f"random-seed{seed}", random_init=True)

    @classmethod
    def from_preset(cls, name: str, *, seed: int = 0, device: str | torch.device = "cpu") -> Generator:
        """A named preset (``thinksound`` or ``tiny``) with random weights. Output is noise."""
        return cls.from_config(preset(name), seed=seed, preset_name=name, device=device)

    @classmethod
    def from_original(
        cls,
        config: Mapping[str, Any],
        state_dict: Mapping[str, Tensor] | None,
        *,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> Generator:
        """From an original-format JSON config and a state dict with the published key names
        (strict). ``state_dict=None`` gives random weights."""
        cfg = from_original_json(config)
        if state_dict is None:
            return cls.from_config(cfg, seed=seed, preset_name="original", device=device)
        gen = cls._build_meta(cfg, "original")
        loading.load_strict(gen, state_dict, assign=True)
        gen.float()
        return gen._finish(device=device, weights_id=loading.weights_digest(state_dict), random_init=False)

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path = loading.HUB_REPO,
        *,
        device: str | torch.device = "cpu",
        config: GeneratorConfig | str = "thinksound",
        revision: str | None = None,
        main_filename: str = loading.MAIN_CHECKPOINT,
        vae_filename: str | None = loading.VAE_CHECKPOINT,
    ) -> Generator:
        """The published model from a local directory or a hub repo id: the main checkpoint (strict),
        then ``vae.ckpt``'s ``autoencoder.*`` weights over the VAE, as predict.py does.

        ``config`` is a preset name or a GeneratorConfig (the published files fit ``thinksound``).
        """
        main = loading.resolve_file(source, main_filename, revision=revision)
        vae = loading.resolve_file(source, vae_filename, revision=revision) if vae_filename else None
        name, cfg = (config, preset(config)) if isinstance(config, str) else ("custom", config)
        gen = cls._build_meta(cfg, name)
        state = loading.read_state_dict(main)
        ident = loading.weights_digest(state)
        loading.load_strict(gen, state, assign=True)
        del state
        if vae is not None:
            # Drop the VAE tensors of the main checkpoint before reading vae.ckpt: one copy at a time.
            gen.pretransform.to_empty(device="meta")
            vae_state = loading.read_state_dict(vae)
            ident += "+" + loading.weights_digest(vae_state)
            gen.load_vae_state_dict(vae_state, assign=True)
            del vae_state
        gen.float()
        return gen._finish(device=device, weights_id=ident, random_init=False)

    def load_vae_state_dict(self, state_dict: Mapping[str, Tensor], *, assign: bool = False) -> None:
        """Load ``vae.ckpt``'s state dict: ``autoencoder.*`` keys, strictly; other groups are ignored."""
        if isinstance(state_dict.get("state_dict"), Mapping):
            state_dict = state_dict["state_dict"]
        vae_state = loading.strip_prefix(state_dict, loading.VAE_PREFIX)
        loading.load_strict(self.vae, vae_state, assign=assign)
        self._weights_id += "+vae" + loading.weights_digest(vae_state)

    # identity

    @property
    def dit(self) -> MMDiT:
        return self.model.model

    @property
    def vae(self) -> AudioAutoencoder:
        return self.pretransform.model

    @property
    def device(self) -> torch.device:
        return self.dit.empty_clip_feat.device

    @property
    def is_random_init(self) -> bool:
        return self._random_init

    @property
    def version(self) -> str:
        """Stable fingerprint for cache keys: preset, config hash and weights identity."""
        return f"{self.preset_name}-{self.config.fingerprint()}-{self._weights_id}"

    # execution options

    def autocast(self, precision: str = "fp32") -> contextlib.AbstractContextManager[Any]:
        """Autocast context for "fp32" (none), "bf16" or "fp16". RoPE stays float32 inside."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        dtype = PRECISIONS[precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def enable_compile(self, **compile_kwargs: Any) -> None:
        """Opt in to ``torch.compile`` for the per-step DiT evaluation (the first call compiles)."""
        self._predict = torch.compile(self.dit.predict_flow, **compile_kwargs)

    # the velocity field

    def seq_lengths(
        self, *, duration_sec: float | None, latent_len: int | None = None, features: Mapping[str, Tensor] | None = None
    ) -> SeqLengths:
        return seq_lengths(self.config, duration_sec=duration_sec, latent_len=latent_len, features=features or {})

    @torch.no_grad()
    def prepare(
        self,
        features: Mapping[str, Tensor],
        *,
        batch: int,
        latent_len: int | None = None,
        cfg_scale: float = 1.0,
        duration_sec: float | None = None,
    ) -> Prepared:
        """Everything that does not change across sampler steps, computed once.

        Under CFG the unconditional conditions are computed once at batch 1 and broadcast: they are
        the same for every item.
        """
        lengths = self.seq_lengths(duration_sec=duration_sec, latent_len=latent_len, features=features)
        kwargs = resolve_features(self.dit, features, batch=batch, lengths=lengths)
        cond = self.dit.preprocess_conditions(lengths=lengths, **kwargs)
        if cfg_scale != 1.0:
            uncond = self.dit.empty_conditions(lengths=lengths, global_text_given=kwargs["global_text"] is not None)
            cond = Conditions.cat(cond, uncond.expand(batch))
        return Prepared(cond=cond, cfg_scale=float(cfg_scale), lengths=lengths)

    def guided_flow(self, prepared: Prepared, x: Tensor, t: Tensor) -> Tensor:
        """Velocity for channel-first x (B, C, N) at times t (B,), with CFG when cfg_scale != 1."""
        cfg = prepared.cfg_scale
        # Under CFG, cond holds [cond; uncond]: the DiT shares the latent and t between the halves.
        flow = self._predict(x.transpose(1, 2), t, prepared.cond)
        if cfg != 1.0:
            cond, uncond = flow.chunk(2)
            flow = uncond + (cond - uncond) * cfg
        return flow.transpose(1, 2)

    @torch.no_grad()
    def velocity(
        self,
        x: Tensor,
        t: Tensor,
        features: Mapping[str, Tensor],
        cfg_scale: float = 1.0,
        duration_sec: float | None = None,
    ) -> Tensor:
        """One guided DiT evaluation, equal to the original ``MMDiTWrapper`` forward with batch_cfg.

        x (B, C, N) channel-first, t (B,); features by their .npz names; absent video or text
        features select the learned empty ones. Returns the flow (B, C, N).
        """
        x = x.to(self.device)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        prepared = self.prepare(
            features, batch=x.shape[0], latent_len=x.shape[-1], cfg_scale=cfg_scale, duration_sec=duration_sec
        )
        return self.guided_flow(prepared, x, t)

    # the VAE

    @torch.no_grad()
    def decode(self, latents: Tensor, *, iterate_batch: bool = True) -> Tensor:
        """(B, C, N) latents -> (B, 2, N * 2048) audio; item by item by default to bound memory."""
        vae = self.vae
        latents = latents.to(self.device)
        if not iterate_batch:
            return vae.decode(latents)
        return torch.cat([vae.decode(z) for z in latents.split(1)])

    @torch.no_grad()
    def encode(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 2, L) audio -> the VAE posterior (mean, stdev), each (B, C, L / 2048).

        The original always samples mean + eps * stdev; the caller decides whether to.
        """
        means, stdevs = zip(*(self.vae.encode(a) for a in audio.to(self.device).split(1)), strict=True)
        return torch.cat(means), torch.cat(stdevs)

    def parameter_count(self) -> dict[str, int]:
        return {
            "dit": sum(p.numel() for p in self.dit.parameters()),
            "vae": sum(p.numel() for p in self.vae.parameters()),
        }

