"""A deliberately plain forward pass with the original's structure, on our modules' weights.

Written from THINKSOUND_SPEC.md (not from the original source) for two uses:
- tests compare the optimised ``Generator`` against it on shapes the fixtures do not cover
  (batch 2, fractional durations, truncated and padded conditions);
- bench/bench_sampler.py times it as a stand-in for the original's per-step cost: the batch is doubled
  before preprocessing, every condition is re-projected at every step, SiLU runs inside every adaLN,
  RoPE uses the 2x2 matrix form per stream and pre-only blocks attend with every query.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from thinksound.math import rope_matrices, rope_table
from thinksound.mmdit import MMDiT


def _fix(x: Tensor, length: int) -> Tensor:
    if x.shape[1] >= length:
        return x[:, :length]
    return torch.cat([x, x.new_zeros(x.shape[0], length - x.shape[1], *x.shape[2:])], dim=1)


def _rope(x: Tensor, rot: Tensor) -> Tensor:
    xf = x.float().view(*x.shape[:-1], -1, 1, 2)
    out = rot[..., 0] * xf[..., 0] + rot[..., 1] * xf[..., 1]
    return out.reshape(*x.shape).to(x.dtype)


def _pre(block, x: Tensor, c: Tensor, rot: Tensor | None):
    mods = block.adaLN_modulation(c).chunk(2 if block.pre_only else 6, dim=-1)
    h = block.norm1(x) * (1 + mods[1]) + mods[0]
    b, n, d = h.shape
    heads = block.num_heads
    qkv = block.attn.qkv(h).view(b, n, heads, d // heads, 3).permute(0, 2, 1, 3, 4)
    q, k, v = (z.squeeze(-1) for z in qkv.chunk(3, dim=-1))
    q, k = block.attn.q_norm(q), block.attn.k_norm(k)
    if rot is not None:
        q, k = _rope(q, rot), _rope(k, rot)
    return (q, k, v), mods[2:]


def _post(block, x: Tensor, out: Tensor, mods) -> Tensor:
    if block.pre_only:
        return x
    gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
    x = x + block.linear1(out) * gate_msa
    return x + block.ffn(block.norm2(x) * (1 + scale_mlp) + shift_mlp) * gate_mlp


def _attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    out = F.scaled_dot_product_attention(q, k, v)
    b, h, n, d = out.shape
    return out.permute(0, 2, 1, 3).reshape(b, n, h * d)


def original_like_velocity(
    dit: MMDiT,
    x: Tensor,
    t: Tensor,
    feats: dict[str, Tensor],
    *,
    cfg_scale: float,
    lengths: tuple[int, int, int],
) -> Tensor:
    """MMDiTWrapper forward with batch_cfg, structured as the original (see module docstring)."""
    n, lc, ls = lengths
    clip, sync = feats["metaclip_features"], feats["sync_features"]
    text, t5 = feats["metaclip_text_features"], feats["t5_features"]
    gtext = feats.get("metaclip_global_text_features")
    latent = x.permute(0, 2, 1)
    b = latent.shape[0]
    if cfg_scale != 1.0:
        latent, t = torch.cat([latent, latent]), torch.cat([t, t])
        clip = torch.cat([_fix(clip, lc), dit.empty_clip_feat[None].expand(b, lc, -1)])
        sync = torch.cat([_fix(sync, ls), dit.empty_sync_feat[None].expand(b, ls, -1)])
        text = torch.cat([_fix(text, 77), dit.empty_string_feat[None].expand(b, -1, -1)])
        t5 = torch.cat([t5, dit.empty_t5_feat[None].expand(b, -1, -1)])
        if gtext is not None:
            gtext = torch.cat([gtext, torch.zeros_like(gtext)])
    bs = clip.shape[0]
    sync = (sync.view(bs, ls // 8, 8, -1) + dit.sync_pos_emb).flatten(1, 2)
    clip_f = dit.clip_input_proj(clip)
    sync_f = dit.sync_input_proj(sync)
    text_f_c = dit.text_cond_proj(gtext if gtext is not None else text.mean(dim=1))
    text_f = dit.text_input_proj(torch.cat([F.pad(text, (0, t5.shape[2] - text.shape[2])), t5], dim=1))
    sync_f = F.interpolate(sync_f.transpose(1, 2), size=n, mode="nearest-exact").transpose(1, 2)
    clip_f_c = dit.clip_cond_proj(clip_f.mean(dim=1))

    dh = dit.config.head_dim
    latent_rot = rope_matrices(rope_table(n, dh))
    clip_rot = rope_matrices(rope_table(lc, dh, freq_scaling=n / lc))
    h = dit.audio_input_proj(latent)
    global_c = dit.t_embed(t).unsqueeze(1) + dit.global_cond_mlp(clip_f_c + text_f_c).unsqueeze(1)
    extended_c = global_c + sync_f
    for jb in dit.joint_blocks:
        (ql, kl, vl), ml = _pre(jb.latent_block, h, extended_c, latent_rot)
        (qc, kc, vc), mc = _pre(jb.clip_block, clip_f, global_c, clip_rot)
        (qt, kt, vt), mt = _pre(jb.text_block, text_f, global_c, None)
        out = _attend(torch.cat([ql, qc, qt], 2), torch.cat([kl, kc, kt], 2), torch.cat([vl, vc, vt], 2))
        nl, nc = h.shape[1], clip_f.shape[1]
        h = _post(jb.latent_block, h, out[:, :nl], ml)
        clip_f = _post(jb.clip_block, clip_f, out[:, nl : nl + nc], mc)
        text_f = _post(jb.text_block, text_f, out[:, nl + nc :], mt)
    for fb in dit.fused_blocks:
        (q, k, v), m = _pre(fb, h, extended_c, latent_rot)
        h = _post(fb, h, _attend(q, k, v), m)
    shift, scale = dit.final_layer.adaLN_modulation(extended_c).chunk(2, dim=-1)
    flow = dit.final_layer.conv(dit.final_layer.norm(h) * (1 + scale) + shift)
    if cfg_scale != 1.0:
        cond, uncond = flow.chunk(2)
        flow = uncond + (cond - uncond) * cfg_scale
    return flow.permute(0, 2, 1)
