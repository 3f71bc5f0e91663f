"""Checkpoint files: where they are, how they are read, how random weights are drawn, and a cheap
identity for cache keys.

Files are read with ``weights_only=True`` (or as safetensors) and mapped into memory where the format
allows it, so that assigning them to a model built on the meta device never holds two copies. Objects
of untrusted classes in a checkpoint (a Lightning checkpoint's hyper-parameters, say) load as inert
placeholders (``safe_pickle``); only the tensors of its ``state_dict`` are used.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from thinksound.safe_pickle import load_untrusted

log = logging.getLogger(__name__)

MAIN_CHECKPOINT = "thinksound_light.ckpt"
VAE_CHECKPOINT = "vae.ckpt"
HUB_REPO = "liuhuadai/ThinkSound"
VAE_PREFIX = "autoencoder."


def resolve_file(source: str | Path, filename: str, *, revision: str | None = None) -> Path:
    """A checkpoint file from a local directory, or downloaded from a Hugging Face hub repo id."""
    local = Path(source)
    if local.is_dir():
        path = local / filename
        if not path.is_file():
            raise FileNotFoundError(f"{filename} not found in {local}")
        return path
    if local.exists():
        raise ValueError(f"source must be a directory or a hub repo id, got the file {local}")
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id=str(source), filename=filename, revision=revision))


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from .safetensors or a torch pickle (weights_only, memory-mapped).

    A (Lightning) checkpoint's ``state_dict`` entry is returned when present; everything else in the
    file (optimizer states, hyper-parameters, callbacks) is dropped.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        # pread straight into the tensors: one copy, and no file mapping that would count twice.
        return load_file(str(path), backend="pread")
    try:
        obj = load_untrusted(path)
    except Exception as exc:
        raise ValueError(
            f"{path} cannot be read with weights_only=True ({_unpickling_reason(exc)}). Checkpoints that "
            "pickle objects of blocked modules (os, sys), or custom objects in the legacy format, must be "
            "converted once to a plain state dict or safetensors by a trusted tool."
        ) from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a flat mapping of tensors")
    return dict(obj)


def _unpickling_reason(exc: Exception) -> str:
    # torch's message wraps the reason in advice to retry with weights_only=False: keep only the reason.
    lines = [line for line in str(exc).splitlines() if line.strip()]
    reasons = [line for line in lines if "GLOBAL" in line or "Unsupported" in line or "Can only" in line]
    return (reasons or lines or [type(exc).__name__])[0]


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Keys that start with `prefix`, without it; other groups (EMA copies, discriminators) are dropped."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], *, assign: bool) -> None:
    """load_state_dict(strict=True) with every missing, unexpected and mis-shaped key in the error."""
    own = module.state_dict(keep_vars=True)
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"state dict does not fit {type(module).__name__}: {len(missing)} missing {missing[:8]}, "
            f"{len(unexpected)} unexpected {unexpected[:8]}, {len(shapes)} shape mismatches {shapes[:8]}"
        )
    module.load_state_dict(state_dict, strict=True, assign=assign)


def init_random_(module: nn.Module, *, seed: int) -> None:
    """Redraw every parameter from its own generator, independent of the global RNG.

    Weights are 0.02 * randn, multiplicative gains (RMSNorm weights, weight-norm g) 1 + 0.02 * randn,
    the rule the reference fixtures use.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            draw = torch.randn(p.shape, generator=gen, dtype=torch.float32) * 0.02
            if name.endswith(("norm.weight", "weight_g")):
                draw = draw + 1.0
            p.copy_(draw)


def weights_digest(state_dict: Mapping[str, Tensor]) -> str:
    """A cheap identity of a set of weights: names, shapes, dtypes and the first values of each tensor."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        head = t.detach().reshape(-1)[:64].to("cpu", torch.float32).contiguous()
        h.update(head.numpy().tobytes())
    return h.hexdigest()[:16]
