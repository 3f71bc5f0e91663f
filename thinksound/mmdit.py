"""The MM-DiT of ThinkSound (the original's ``MMmodule``, v2), split into per-sample and per-step work.

``preprocess_conditions`` runs once per sample and returns ``Conditions``; ``predict_flow`` runs at each
sampler step. The original re-runs the preprocessing inside every forward; caching it gives the same
numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thinksound.blocks import FinalBlock, JointBlock, SingleBlock, TimestepEmbedder
from thinksound.config import DiTConfig
from thinksound.layers import MLP, ChannelLastConv1d, ConvMLP
from thinksound.math import fix_length, nearest_exact_indices, rope_identity, rope_table

SYNC_SEGMENT = 8  # Synchformer emits 8 feature frames per segment; sync_pos_emb has one row per frame
# The joint blocks' latent and CLIP streams use kernel 3 whatever the config says (the original hard-codes
# it); the config's kernel_size applies to the latent input projection and the fused blocks.
JOINT_KERNEL = 3


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
    latent_rope: Tensor  # (N, Dh/2, 2) RoPE (cos, sin) of the latent tokens
    joint_rope: Tensor  # (N + Lc + Lt, Dh/2, 2) RoPE of the joint sequence (identity for text)
    qk_weights: tuple[Tensor, ...]  # per block (joint, then fused): q/k RMSNorm weights per token

    @property
    def batch(self) -> int:
        return self.clip.shape[0]

    def expand(self, batch: int) -> Conditions:
        """Broadcast batch-1 conditions to `batch` items (views, no copies)."""
        if self.batch != 1:
            raise ValueError(f"only batch-1 conditions can be expanded, got {self.batch}")
        return replace(
            self,
            clip=self.clip.expand(batch, -1, -1),
            text=self.text.expand(batch, -1, -1),
            sync=self.sync.expand(batch, -1, -1),
            global_c=self.global_c.expand(batch, -1),
        )

    @staticmethod
    def cat(a: Conditions, b: Conditions) -> Conditions:
        """Stack two condition sets along the batch (the original's [cond; uncond] doubling)."""
        return replace(
            a,
            clip=torch.cat([a.clip, b.clip]),
            text=torch.cat([a.text, b.text]),
            sync=torch.cat([a.sync, b.sync]),
            global_c=torch.cat([a.global_c, b.global_c]),
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
                JointBlock(kernel_size=JOINT_KERNEL, pre_only=(i == c.joint_depth - 1), **block_args)
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
        dev, dh = clip_f.device, c.head_dim
        latent_rope = rope_table(lengths.latent, dh)
        clip_rope = rope_table(lengths.clip, dh, freq_scaling=lengths.latent / lengths.clip)
        n_text = text_f.shape[1]
        joint_rope = torch.cat([latent_rope, clip_rope, rope_identity(n_text, dh)])
        qk_weights = [blk.qk_weight(lengths.latent, lengths.clip, n_text) for blk in self.joint_blocks]
        qk_weights += [blk.attn.qk_weight()[:, None, None, None] for blk in self.fused_blocks]
        return Conditions(
            clip=clip_f,
            text=text_f,
            sync=sync_f,
            global_c=global_c,
            latent_rope=latent_rope.to(dev),
            joint_rope=joint_rope.to(dev),
            qk_weights=tuple(qk_weights),
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
        """One DiT evaluation: latent (B, N, C) channel-last, t (B,) -> flow (R*B, N, C).

        cond may stack R condition sets (R = 2 for CFG: [cond; uncond]) over the same latent and
        t; the latent projection and timestep embedding are computed once for all of them.
        """
        b, n = latent.shape[:2]
        if n != cond.sync.shape[1] or cond.batch % b:
            raise ValueError(f"latent {tuple(latent.shape)} does not fit conditions of batch {cond.batch}, length "
                             f"{cond.sync.shape[1]}")
        reps = cond.batch // b
        x = self.audio_input_proj(latent)  # (B, N, D)
        t_emb = self.t_embed(t)  # (B, D)
        if reps > 1:
            x = x.repeat(reps, 1, 1)
            t_emb = t_emb.repeat(reps, 1)
        global_c = t_emb.unsqueeze(1) + cond.global_c.unsqueeze(1)  # (RB, 1, D)
        extended_c = global_c + cond.sync  # (RB, N, D)
        # Every adaLN applies SiLU to one of these two tensors first: do it once.
        silu_global, silu_extended = F.silu(global_c), F.silu(extended_c)
        clip, text = cond.clip, cond.text
        n_joint = len(self.joint_blocks)
        for i, block in enumerate(self.joint_blocks):
            x, clip, text = block(
                x, clip, text, silu_global, silu_extended, qk_weight=cond.qk_weights[i], rope=cond.joint_rope
            )
        for i, block in enumerate(self.fused_blocks):
            x = block(x, silu_extended, qk_weight=cond.qk_weights[n_joint + i], rope=cond.latent_rope)
        return self.final_layer(x, silu_extended)
