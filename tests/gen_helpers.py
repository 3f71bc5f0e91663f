"""Shared helpers for the generator tests (thinksound/): reference paths, fixture loading, errors."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

_ROOT = Path(__file__).resolve().parents[1]
_CANDIDATES = [
    Path(os.environ.get("THINKSOUND_REFERENCE", "/nonexistent")),
    _ROOT.parent / "shared" / "reference",
    _ROOT / "shared" / "reference",
]
REFERENCE = next((p for p in _CANDIDATES if (p / "thinksound_state_dict.json").is_file()), _CANDIDATES[1])
SET_A = REFERENCE / "fixtures" / "setA"

needs_reference = pytest.mark.skipif(
    not (SET_A / "weights.safetensors").is_file(), reason=f"reference fixtures not found (looked in {REFERENCE})"
)


def rel_err(got: Tensor, ref: Tensor) -> float:
    """max |got - ref| relative to max |ref| (the issue's tolerance measure)."""
    return ((got.float() - ref.float()).abs().max() / ref.float().abs().max()).item()


@cache
def fixture(name: str) -> dict[str, Tensor]:
    return load_file(str(SET_A / f"{name}.safetensors"))


@cache
def set_a_config() -> dict:
    return json.loads((SET_A / "model_config_resolved.json").read_text())


def fixture_features(f: dict[str, Tensor]) -> dict[str, Tensor]:
    """The fixture's inputs under the original .npz feature names."""
    out = {
        "metaclip_features": f["in.clip_f"],
        "sync_features": f["in.sync_f"],
        "metaclip_text_features": f["in.text_f"],
        "t5_features": f["in.t5_features"],
    }
    if "in.metaclip_global_text_features" in f:
        out["metaclip_global_text_features"] = f["in.metaclip_global_text_features"]
    return out


def tiny_features(batch: int, *, clip_len: int = 16, sync_len: int = 48, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "metaclip_features": torch.randn(batch, clip_len, 64, generator=g),
        "sync_features": torch.randn(batch, sync_len, 64, generator=g),
        "metaclip_text_features": torch.randn(batch, 77, 64, generator=g),
        "t5_features": torch.randn(batch, 77, 64, generator=g),
    }
