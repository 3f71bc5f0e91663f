"""From a dict of batched features (the original .npz names) to the DiT's conditions.

Missing keys select the learned empty features, which is how the model does text-only or video-only
generation (the original's ``video_exist=False`` path for video; the null text tokens for text).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from thinksound.config import GeneratorConfig
from thinksound.mmdit import MMDiT, SeqLengths

CLIP = "metaclip_features"
SYNC = "sync_features"
TEXT = "metaclip_text_features"
T5 = "t5_features"
GLOBAL_TEXT = "metaclip_global_text_features"
FEATURE_NAMES = (CLIP, SYNC, TEXT, T5, GLOBAL_TEXT)


def seq_lengths(
    config: GeneratorConfig,
    *,
    duration_sec: float | None,
    latent_len: int | None,
    features: Mapping[str, Tensor],
) -> SeqLengths:
    """Nominal lengths: from the duration (predict.py's formulas), else the config's nominal lengths,
    else the inputs themselves."""
    if duration_sec is not None:
        n, lc, ls = config.seq_lengths(duration_sec)
    else:
        d = config.dit
        n = d.latent_seq_len if d.latent_seq_len is not None else latent_len
        lc = d.clip_seq_len if d.clip_seq_len is not None else _len_of(features, CLIP)
        ls = d.sync_seq_len if d.sync_seq_len is not None else _len_of(features, SYNC)
        if n is None or lc is None or ls is None:
            raise ValueError("pass duration_sec: the config has no nominal lengths and features are missing")
    if latent_len is not None and latent_len != n:
        raise ValueError(f"latent length {latent_len} does not match the nominal length {n}")
    return SeqLengths(latent=n, clip=lc, sync=ls)


def _len_of(features: Mapping[str, Tensor], key: str) -> int | None:
    return features[key].shape[1] if features.get(key) is not None else None


def resolve_features(
    dit: MMDiT, features: Mapping[str, Tensor], *, batch: int, lengths: SeqLengths
) -> dict[str, Tensor | None]:
    """Check widths and batch sizes; fill absent features with the learned empty ones.

    Returns keyword arguments for ``MMDiT.preprocess_conditions`` (without ``lengths``).
    """
    unknown = set(features) - set(FEATURE_NAMES)
    if unknown:
        raise ValueError(f"unknown feature names {sorted(unknown)}; expected some of {FEATURE_NAMES}")
    c = dit.config
    ref = dit.empty_clip_feat
    widths = {CLIP: c.clip_dim, SYNC: c.sync_dim, TEXT: c.metaclip_text_dim, T5: c.text_dim}
    out: dict[str, Tensor | None] = {}
    for key, width in widths.items():
        f = features.get(key)
        if f is None:
            continue
        if f.ndim != 3 or f.shape[0] != batch or f.shape[2] != width:
            raise ValueError(f"{key} must be (B={batch}, L, {width}), got {tuple(f.shape)}")
        out[key] = f.to(device=ref.device, dtype=ref.dtype)
    g = features.get(GLOBAL_TEXT)
    if g is not None:
        if g.shape != (batch, c.metaclip_text_dim):
            raise ValueError(f"{GLOBAL_TEXT} must be ({batch}, {c.metaclip_text_dim}), got {tuple(g.shape)}")
        g = g.to(device=ref.device, dtype=ref.dtype)

    def empty(param: Tensor, length: int) -> Tensor:
        return param[None].expand(batch, length, -1)

    return {
        "clip": out.get(CLIP, empty(dit.empty_clip_feat, lengths.clip)),
        "sync": out.get(SYNC, empty(dit.empty_sync_feat, lengths.sync)),
        "metaclip_text": out.get(TEXT, dit.empty_string_feat[None].expand(batch, -1, -1)),
        "t5": out.get(T5, dit.empty_t5_feat[None].expand(batch, -1, -1)),
        "global_text": g,
    }

