"""Plain forwards with the structure of the reference Synchformer (audio branch, sync head) and of
av-benchmark's DeSync, run on our modules' weights by key name.

Written from the published reference code's semantics (v-iashin/Synchformer as used by
hkchengrex/av-benchmark), deliberately unoptimised and independent of ``thinksound.qc``:
- the mel front end is transformers' numpy ``spectrogram`` + ``mel_filter_bank`` with torchaudio's
  ``MelSpectrogram`` settings, segments cut in a Python loop, ``log(x + 1e-6)``, padded to 66 frames and
  normalised by (x - mean) / (2 std);
- AST runs the transformers-4.27 layout with explicit softmax attention on (N, T, F) input that is
  transposed to (N, 1, F, T) before the patch convolution;
- frequency aggregation is torch's own ``nn.TransformerEncoderLayer`` (norm_first, GELU, eps 1e-6)
  over [CLS, 12 frequency tokens] with every query, CLS read out;
- the head is minGPT-style attention over [OFF, v, MOD, a] + positional embedding;
- DeSync is av-benchmark's loop: first 14 and last 14 segments, argmax over 21 classes of
  linspace(-2, 2, 21), mean absolute offset.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

MEAN, STD = -4.2677393, 4.5689974
SEGMENT, STEP = 10240, 5120


def ref_sync_mel(audio: np.ndarray) -> Tensor:
    """(samples,) 16 kHz -> (S, 128, 66), torchaudio MelSpectrogram semantics via transformers' numpy code."""
    filters = mel_filter_bank(
        num_frequency_bins=513,
        num_mel_filters=128,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=16000,
        norm=None,
        mel_scale="htk",
    )
    window = window_function(400, "hann", frame_length=1024, periodic=True, center=True)
    segments = []
    for i in range((audio.shape[0] - SEGMENT) // STEP + 1):
        piece = audio[i * STEP : i * STEP + SEGMENT].astype(np.float64)
        mel = spectrogram(
            piece,
            window,
            frame_length=1024,
            hop_length=160,
            fft_length=1024,
            power=2.0,
            center=True,
            pad_mode="reflect",
            mel_filters=filters,
        )  # (128, 65)
        mel = np.log(mel + 1e-6)
        mel = np.pad(mel, ((0, 0), (0, 66 - mel.shape[1])), constant_values=0.0)
        segments.append((mel - MEAN) / (2 * STD))
    return torch.from_numpy(np.stack(segments)).float()


def _attention(x: Tensor, q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    b, t, c = x.shape
    q, k, v = (y.view(b, t, heads, c // heads).transpose(1, 2) for y in (q, k, v))
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
    return (att.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, t, c)


def _lin(sd: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])


def _ln(sd: dict[str, Tensor], name: str, x: Tensor, eps: float) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def ref_ast_tokens(sd: dict[str, Tensor], spec: Tensor, *, heads: int) -> Tensor:
    """extract_afeats: (B, S, 1, 128, 66) -> (B, S, 6, D) with the reference AST + frequency aggregator."""
    b, s, _, fa, ta = spec.shape
    x = spec.view(b, s, fa, ta).permute(0, 1, 3, 2).reshape(b * s, ta, fa)  # (N, T, F)
    p = "afeat_extractor.ast."
    x = x.unsqueeze(1).transpose(2, 3)  # (N, 1, F, T)
    x = F.conv2d(x, sd[p + "embeddings.patch_embeddings.projection.weight"],
                 sd[p + "embeddings.patch_embeddings.projection.bias"], stride=(10, 10))
    f, t = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    n = x.shape[0]
    x = torch.cat((sd[p + "embeddings.cls_token"].expand(n, -1, -1),
                   sd[p + "embeddings.distillation_token"].expand(n, -1, -1), x), dim=1)
    x = x + sd[p + "embeddings.position_embeddings"]
    layer = 0
    while f"{p}encoder.layer.{layer}.layernorm_before.weight" in sd:
        lp = f"{p}encoder.layer.{layer}."
        h = _ln(sd, lp + "layernorm_before", x, 1e-12)
        a = _attention(h, _lin(sd, lp + "attention.attention.query", h), _lin(sd, lp + "attention.attention.key", h),
                       _lin(sd, lp + "attention.attention.value", h), heads)
        x = x + _lin(sd, lp + "attention.output.dense", a)
        h = _ln(sd, lp + "layernorm_after", x, 1e-12)
        x = x + _lin(sd, lp + "output.dense", F.gelu(_lin(sd, lp + "intermediate.dense", h)))
        layer += 1
    x = _ln(sd, p + "layernorm", x, 1e-12)
    d = x.shape[-1]
    feats = x[:, 2:, :].permute(0, 2, 1).reshape(n, d, f, t)  # restore_freq_temp_dims
    feats = feats.permute(0, 3, 2, 1).reshape(n * t, f, d)  # FrequencyTransformerEncoderLayer
    ap = "afeat_extractor.freq_attn_agg."
    layer_ref = nn.TransformerEncoderLayer(
        d_model=d, nhead=heads, dim_feedforward=sd[ap + "linear1.weight"].shape[0], activation=nn.GELU(),
        batch_first=True, dropout=0.0, layer_norm_eps=1e-6, norm_first=True,
    ).eval()
    layer_ref.load_state_dict({k[len(ap):]: v for k, v in sd.items() if k.startswith(ap) and "cls_token" not in k})
    seq = torch.cat((sd[ap + "cls_token"].expand(n * t, -1, -1), feats), dim=1)
    with torch.no_grad():
        out = layer_ref(seq)[:, 0, :]
    return out.view(n, t, d).view(b, s, t, d)


def ref_compare_v_a(sd: dict[str, Tensor], vis: Tensor, aud: Tensor, *, heads: int) -> Tensor:
    """(B, S, 8, Dv), (B, S, 6, Da) -> (B, 21): vproj/aproj, then the GlobalTransformer."""
    vis, aud = _lin(sd, "vproj", vis), _lin(sd, "aproj", aud)
    b, s, tv, d = vis.shape
    v, a = vis.reshape(b, s * tv, d), aud.reshape(b, s * aud.shape[2], d)
    p = "transformer."
    v, a = _ln(sd, p + "vis_in_lnorm", v, 1e-5), _ln(sd, p + "aud_in_lnorm", a, 1e-5)
    x = torch.cat((sd[p + "OFF_tok"].expand(b, -1, -1), v, sd[p + "MOD_tok"].expand(b, -1, -1), a), dim=1)
    x = x + sd[p + "pos_emb_cfg.pos_emb"]
    i = 0
    while f"{p}blocks.{i}.ln1.weight" in sd:
        bp = f"{p}blocks.{i}."
        h = _ln(sd, bp + "ln1", x, 1e-5)
        y = _attention(h, _lin(sd, bp + "attn.query", h), _lin(sd, bp + "attn.key", h), _lin(sd, bp + "attn.value", h),
                       heads)
        x = x + _lin(sd, bp + "attn.proj", y)
        h = _ln(sd, bp + "ln2", x, 1e-5)
        x = x + _lin(sd, bp + "mlp.2", F.gelu(_lin(sd, bp + "mlp.0", h)))
        i += 1
    x = _ln(sd, p + "ln_f", x, 1e-5)
    return _lin(sd, p + "off_head", x[:, 0, :])


def ref_desync(sd: dict[str, Tensor], vis: Tensor, aud: Tensor, *, heads: int) -> tuple[float, Tensor]:
    """av-benchmark's DeSync of one batch: (B, S, 8, D) and (B, S, 6, D) with S >= 14."""
    grid = torch.from_numpy(np.linspace(-2, 2, 21)).float()
    scores = []
    logits_first = ref_compare_v_a(sd, vis[:, :14], aud[:, :14], heads=heads)
    for j in range(vis.shape[0]):
        scores.append(abs(grid[torch.argmax(logits_first, dim=-1)[j]].item()))
    logits_last = ref_compare_v_a(sd, vis[:, -14:], aud[:, -14:], heads=heads)
    for j in range(vis.shape[0]):
        scores.append(abs(grid[torch.argmax(logits_last, dim=-1)[j]].item()))
    return float(np.mean(scores)), torch.stack((logits_first, logits_last), dim=1)


def reference_state_keys(*, ast_layers: int, head_layers: int) -> set[str]:
    """The published checkpoint's key names outside ``vfeat_extractor``, from the reference modules."""
    keys = {"vproj.weight", "vproj.bias", "aproj.weight", "aproj.bias"}
    ast = "afeat_extractor.ast."
    keys |= {ast + k for k in ("embeddings.cls_token", "embeddings.distillation_token",
                               "embeddings.position_embeddings", "embeddings.patch_embeddings.projection.weight",
                               "embeddings.patch_embeddings.projection.bias", "layernorm.weight", "layernorm.bias")}
    for i in range(ast_layers):
        for m in ("attention.attention.query", "attention.attention.key", "attention.attention.value",
                  "attention.output.dense", "intermediate.dense", "output.dense", "layernorm_before",
                  "layernorm_after"):
            keys |= {f"{ast}encoder.layer.{i}.{m}.weight", f"{ast}encoder.layer.{i}.{m}.bias"}
    agg = "afeat_extractor.freq_attn_agg."
    keys |= {agg + "cls_token", agg + "self_attn.in_proj_weight", agg + "self_attn.in_proj_bias"}
    for m in ("self_attn.out_proj", "linear1", "linear2", "norm1", "norm2"):
        keys |= {f"{agg}{m}.weight", f"{agg}{m}.bias"}
    tr = "transformer."
    keys |= {tr + "OFF_tok", tr + "MOD_tok", tr + "pos_emb_cfg.pos_emb"}
    for m in ("vis_in_lnorm", "aud_in_lnorm", "ln_f", "off_head"):
        keys |= {f"{tr}{m}.weight", f"{tr}{m}.bias"}
    for i in range(head_layers):
        for m in ("ln1", "ln2", "attn.key", "attn.query", "attn.value", "attn.proj", "mlp.0", "mlp.2"):
            keys |= {f"{tr}blocks.{i}.{m}.weight", f"{tr}blocks.{i}.{m}.bias"}
    return keys
