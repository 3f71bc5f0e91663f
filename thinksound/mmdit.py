"""The MM-DiT of ThinkSound (the original's ``MMmodule``, v2), split into per-sample and per-step work.

``preprocess_conditions`` runs once per sample and returns ``Conditions``; ``predict_flow`` runs at each
sampler step. The original re-runs the preprocessing inside every forward; caching it gives the same
numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thinksound.blocks import FinalBlock, JointBlock, SingleBlock, TimestepEmbedder
from thinksound.config import DiTConfig
from thinksound.layers import MLP, ChannelLastConv1d, ConvMLP
from thinksound.math import fix_length, nearest_exact_indices, rope_table

SYNC_SEGMENT = 8  # Synchformer emits 8 feature frames per segment; sync_pos_emb has one row per frame


@dataclass(frozen=True)
class SeqLengths:
    """Nominal lengths the model is run at: latent N, CLIP Lc and sync Ls tokens."""

    latent: int
    clip: int
    sync: int

    def __post_init__(self) -> None:
        if min(self.latent, self.clip, self.sync) <= 0:
            raise ValueError(f"sequence lengths must be positive (duration >= 1 s): {self}")
        if self.sync % SYNC_SEGMENT:
            raise ValueError(f"sync length {self.sync} is not a multiple of {SYNC_SEGMENT}")


@dataclass(frozen=True)
class Conditions:
    """Everything the DiT needs that does not depend on the latent or the timestep."""

    clip: Tensor  # (B, Lc, D) CLIP token stream
    text: Tensor  # (B, Lt, D) text token stream [MetaCLIP | T5]
    sync: Tensor  # (B, N, D) sync features resampled to the latent length
    global_c: Tensor  # (B, D) global_cond_mlp(clip_f_c + text_f_c)
    latent_rope: Tensor  # (N, Dh/2, 2)
    clip_rope: Tensor  # (Lc, Dh/2, 2)

    @property
    def batch(self) -> int:
        return self.clip.shape[0]

    def expand(self, batch: int) -> Conditions:
        """Broadcast batch-1 conditions to `batch` items (views, no copies)."""
        if self.batch != 1:
            raise ValueError(f"only batch-1 conditions can be expanded, got {self.batch}")
        return Conditions(
            clip=self.clip.expand(batch, -1, -1),
            text=self.text.expand(batch, -1, -1),
            sync=self.sync.expand(batch, -1, -1),
            global_c=self.global_c.expand(batch, -1),
            latent_rope=self.latent_rope,
            clip_rope=self.clip_rope,
        )

    @staticmethod
    def cat(a: Conditions, b: Conditions) -> Conditions:
        """Stack two condition sets along the batch (the original's [cond; uncond] doubling)."""
        return Conditions(
            clip=torch.cat([a.clip, b.clip]),
            text=torch.cat([a.text, b.text]),
            sync=torch.cat([a.sync, b.sync]),
            global_c=torch.cat([a.global_c, b.global_c]),
            latent_rope=a.latent_rope,
            clip_rope=a.clip_rope,
        )


class MMDiT(nn.Module):
    """Joint blocks over [latent | CLIP | text], then single-stream fused blocks over the latent.

    Parameter names and registration order match the checkpoint's ``model.model.*`` keys.
    """

    def __init__(self, *, config: DiTConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        d = c.hidden_dim
        width = int(d * c.mlp_ratio)
        mult = c.mlp_multiple_of
        pad = (c.kernel_size - 1) // 2
        self.sync_pos_emb = nn.Parameter(torch.zeros(1, 1, SYNC_SEGMENT, c.sync_dim))
        self.empty_string_feat = nn.Parameter(torch.zeros(c.text_seq_len, c.metaclip_text_dim), requires_grad=False)
        self.empty_t5_feat = nn.Parameter(torch.zeros(c.text_seq_len, c.text_dim), requires_grad=False)
        self.empty_clip_feat = nn.Parameter(torch.zeros(1, c.clip_dim))
        self.empty_sync_feat = nn.Parameter(torch.zeros(1, c.sync_dim))
        self.audio_input_proj = nn.Sequential(
            ChannelLastConv1d(c.latent_dim, d, c.kernel_size, padding=pad),
            nn.SiLU(),
            ConvMLP(dim=d, width=width, kernel_size=c.kernel_size, multiple_of=mult),
        )
        self.clip_input_proj = nn.Sequential(
            nn.Linear(c.clip_dim, d), nn.SiLU(), ConvMLP(dim=d, width=width, kernel_size=3, multiple_of=mult)
        )
        self.sync_input_proj = nn.Sequential(
            ChannelLastConv1d(c.sync_dim, d, c.sync_kernel, padding=(c.sync_kernel - 1) // 2),
            nn.SiLU(),
            ConvMLP(dim=d, width=width, kernel_size=3, multiple_of=mult),
        )
        self.text_input_proj = nn.Sequential(
            nn.Linear(c.text_dim, d), nn.SiLU(), MLP(dim=d, width=width, multiple_of=mult)
        )
        self.clip_cond_proj = nn.Linear(d, d)
        self.text_cond_proj = nn.Linear(c.metaclip_text_dim, d)
        self.global_cond_mlp = MLP(dim=d, width=width, multiple_of=mult)
        self.final_layer = FinalBlock(dim=d, out_dim=c.latent_dim)
        self.t_embed = TimestepEmbedder(dim=d, frequency_embedding_size=d, max_period=1)
        block_args = {"dim": d, "num_heads": c.num_heads, "mlp_ratio": c.mlp_ratio, "mlp_multiple_of": mult}
        self.joint_blocks = nn.ModuleList(
            [
                JointBlock(kernel_size=c.kernel_size, pre_only=(i == c.joint_depth - 1), **block_args)
                for i in range(c.joint_depth)
            ]
        )
        self.fused_blocks = nn.ModuleList(
            [SingleBlock(kernel_size=c.kernel_size, **block_args) for _ in range(c.fused_depth)]
        )

    def preprocess_conditions(
        self,
        *,
        clip: Tensor,
        sync: Tensor,
        metaclip_text: Tensor,
        t5: Tensor,
        global_text: Tensor | None,
        lengths: SeqLengths,
    ) -> Conditions:
        """Project the conditions once per sample.

        clip (B, Lc', clip_dim), sync (B, Ls', sync_dim) and metaclip_text (B, 77', text width) are
        truncated or zero-padded at the end to the nominal lengths first (the original's safe_cat).
        global_text (B, metaclip_text_dim) replaces the mean of the MetaCLIP tokens when given.
        """
        c = self.config
        clip = fix_length(clip, lengths.clip)
        sync = fix_length(sync, lengths.sync)
        metaclip_text = fix_length(metaclip_text, c.text_seq_len)
        t5 = fix_length(t5, c.text_seq_len)
        b = clip.shape[0]

        clip_f = self.clip_input_proj(clip)  # (B, Lc, D)
        sync_f = sync.view(b, lengths.sync // SYNC_SEGMENT, SYNC_SEGMENT, -1) + self.sync_pos_emb
        sync_f = self.sync_input_proj(sync_f.flatten(1, 2))  # (B, Ls, D)
        idx = nearest_exact_indices(lengths.sync, lengths.latent).to(sync_f.device)
        sync_f = sync_f.index_select(1, idx)  # (B, N, D)

        if global_text is not None:
            text_f_c = self.text_cond_proj(global_text)
        else:
            # Production path: the pooled feature is not a conditioner id, so the original always
            # uses the mean of the raw MetaCLIP tokens.
            text_f_c = self.text_cond_proj(metaclip_text.mean(dim=1))
        text_tokens = F.pad(metaclip_text, (0, t5.shape[2] - metaclip_text.shape[2]))
        text_f = self.text_input_proj(torch.cat([text_tokens, t5], dim=1))  # (B, 2*77, D)

        clip_f_c = self.clip_cond_proj(clip_f.mean(dim=1))
        global_c = self.global_cond_mlp(clip_f_c + text_f_c)  # (B, D)
        dh = c.head_dim
        return Conditions(
            clip=clip_f,
            text=text_f,
            sync=sync_f,
            global_c=global_c,
            latent_rope=rope_table(lengths.latent, dh).to(clip_f.device),
            clip_rope=rope_table(lengths.clip, dh, freq_scaling=lengths.latent / lengths.clip).to(clip_f.device),
        )

    def empty_conditions(self, *, lengths: SeqLengths, global_text_given: bool) -> Conditions:
        """The unconditional branch of CFG, batch 1: learned empty CLIP/sync/text features.

        When a global text feature is given, its unconditional counterpart is zeros (not the mean
        of the empty tokens), as in the original.
        """
        global_text = None
        if global_text_given:
            global_text = self.empty_string_feat.new_zeros(1, self.config.metaclip_text_dim)
        return self.preprocess_conditions(
            clip=self.empty_clip_feat[None].expand(1, lengths.clip, -1),
            sync=self.empty_sync_feat[None].expand(1, lengths.sync, -1),
            metaclip_text=self.empty_string_feat[None],
            t5=self.empty_t5_feat[None],
            global_text=global_text,
            lengths=lengths,
        )

    def predict_flow(self, latent: Tensor, t: Tensor, cond: Conditions) -> Tensor:
        """One DiT evaluation: latent (B, N, C) channel-last, t (B,) -> flow (B, N, C)."""
        if latent.shape[1] != cond.sync.shape[1]:
            raise ValueError(f"latent length {latent.shape[1]} != nominal {cond.sync.shape[1]}")
        x = self.audio_input_proj(latent)  # (B, N, D)
        global_c = self.t_embed(t).unsqueeze(1) + cond.global_c.unsqueeze(1)  # (B, 1, D)
        extended_c = global_c + cond.sync  # (B, N, D)
        clip, text = cond.clip, cond.text
        for block in self.joint_blocks:
            x, clip, text = block(x, clip, text, global_c, extended_c, cond.latent_rope, cond.clip_rope)
        for block in self.fused_blocks:
            x = block(x, extended_c, cond.latent_rope)
        return self.final_layer(x, extended_c)
