"""DeSync: the audio-visual offset Synchformer predicts, in seconds, the way av-benchmark reports it.

The published ``synchformer_state_dict.pth`` holds the whole Synchformer (av-benchmark loads it
strictly into visual branch + audio branch + sync head). Feature extraction keeps only
``vfeat_extractor.*``; ``SyncScorer`` holds the rest (``afeat_extractor.*``, ``vproj``, ``aproj``,
``transformer.*``) and loads it strictly from the same file. The visual half is the cached
conditioning features: same model, same 16-frame / hop-8 segments at 25 fps.

The head sees a window of 14 segments (4.8 s). Like av-benchmark, a clip is judged on its first and
its last window and the absolute offsets are averaged. A clip shorter than 4.8 s is looped, video and
audio segments together, up to one window: looping both streams by the same segments keeps their
relative offset, and the head only accepts full windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from thinksound.features.synchformer import VFEAT_PREFIX
from thinksound.features.weights import SYNCHFORMER_FILENAME, resolve_file
from thinksound.qc.frontend import SyncMel, SyncMelConfig
from thinksound.qc.sync_audio import AudioBranchConfig, SynchformerAudio
from thinksound.qc.sync_head import GlobalTransformer, SyncHeadConfig


@dataclass(frozen=True)
class SyncResult:
    desync_sec: float  # mean |offset| over the judged windows
    offsets_sec: tuple[float, ...]  # signed predicted offset of each window
    confidences: tuple[float, ...]  # softmax probability of each window's predicted offset
    looped: bool  # the clip was shorter than one window


class SyncScorer(nn.Module):
    """Synchformer's audio branch and sync head (everything but ``vfeat_extractor``)."""

    def __init__(self, *, audio: AudioBranchConfig | None = None, head: SyncHeadConfig | None = None) -> None:
        super().__init__()
        self.audio_config = audio or AudioBranchConfig()
        self.head_config = head or SyncHeadConfig()
        h = self.head_config
        self.mel = SyncMel(SyncMelConfig(n_mels=self.audio_config.n_mels, frames=self.audio_config.frames))
        self.afeat_extractor = SynchformerAudio(self.audio_config)
        self.vproj = nn.Linear(h.visual_dim, h.width)
        self.aproj = nn.Linear(self.audio_config.hidden, h.width)
        self.transformer = GlobalTransformer(h)
        # Plain attributes, not buffers: they stay float32/float64 on CPU whatever the model's dtype.
        self.offset_grid = h.offset_grid()

    @property
    def dtype(self) -> torch.dtype:
        return self.vproj.weight.dtype

    def audio_tokens(self, audio: list[torch.Tensor], *, segments_per_batch: int = 64) -> list[torch.Tensor]:
        """16 kHz mono clips -> per clip (S_i, 6, D) audio tokens; all segments share AST batches."""
        dev = self.vproj.weight.device
        mels = [self.mel(a.to(dev, torch.float32).unsqueeze(0))[0] for a in audio]  # (S_i, 128, 66)
        flat = torch.cat(mels).to(self.dtype)
        outs = [
            self.afeat_extractor(flat[i : i + segments_per_batch].unsqueeze(0))[0]
            for i in range(0, flat.shape[0], segments_per_batch)
        ]
        return list(torch.cat(outs).split([m.shape[0] for m in mels]))

    def window_logits(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """(N, W, 8, Dv) visual and (N, W, 6, Da) audio windows -> (N, num_offsets) logits."""
        v = self.vproj(visual).flatten(1, 2)
        a = self.aproj(audio).flatten(1, 2)
        return self.transformer(v, a)

    @torch.no_grad()
    def score(self, visual: list[torch.Tensor], audio: list[torch.Tensor]) -> list[SyncResult]:
        """Per clip: cached sync features (S*8, Dv) and 16 kHz mono audio -> its DeSync."""
        if len(visual) != len(audio):
            raise ValueError(f"{len(visual)} visual feature sets for {len(audio)} clips")
        h = self.head_config
        dev = self.vproj.weight.device
        # Only as many audio segments as the video has are compared: audio past them (most of a long
        # track, whose sync features are its first window's) is never tokenised.
        mel = self.mel.cfg
        needed = [mel.segment_samples + (v.shape[0] // h.visual_tokens - 1) * mel.segment_hop for v in visual]
        aud_tokens = self.audio_tokens([a[: max(n, mel.segment_samples)] for a, n in zip(audio, needed, strict=True)])
        vis_windows, aud_windows, owners, looped = [], [], [], []
        for n, (vis, aud) in enumerate(zip(visual, aud_tokens, strict=True)):
            vis = vis.to(dev, self.dtype).unflatten(0, (-1, h.visual_tokens))  # (Sv, 8, Dv)
            segments = min(vis.shape[0], aud.shape[0])
            if segments < 1:
                raise ValueError(f"clip {n} has no complete 0.64 s segment")
            for idx in _window_indices(segments, h.window_segments):
                vis_windows.append(vis[idx])
                aud_windows.append(aud[idx])
                owners.append(n)
            looped.append(segments < h.window_segments)
        logits = self.window_logits(torch.stack(vis_windows), torch.stack(aud_windows)).float()
        probs = logits.softmax(dim=-1)
        conf, cls = probs.max(dim=-1)
        offsets = self.offset_grid[cls.cpu()].tolist()
        results = []
        for n in range(len(visual)):
            mine = [i for i, o in enumerate(owners) if o == n]
            signed = tuple(round(offsets[i], 6) for i in mine)
            results.append(
                SyncResult(
                    desync_sec=sum(abs(o) for o in signed) / len(signed),
                    offsets_sec=signed,
                    confidences=tuple(float(conf[i]) for i in mine),
                    looped=looped[n],
                )
            )
        return results


def _window_indices(segments: int, window: int) -> list[torch.Tensor]:
    """Segment indices of the judged windows: first and last 14, or one looped window."""
    if segments < window:
        return [torch.arange(window) % segments]
    return [torch.arange(window), torch.arange(segments - window, segments)]


def split_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The scorer's part of a whole-Synchformer state dict: everything but the visual branch."""
    return {k: v for k, v in state.items() if not k.startswith(VFEAT_PREFIX)}


def scorer_config_from_state(
    state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> tuple[AudioBranchConfig, SyncHeadConfig]:
    """Sizes read from tensor shapes; head counts (invisible in shapes) from metadata or the published ones."""
    meta = metadata or {}
    key = "afeat_extractor.ast.embeddings.cls_token"
    if key not in state or "transformer.OFF_tok" not in state:
        raise ValueError(
            "this Synchformer file holds no audio branch / sync head (afeat_extractor.*, transformer.*); "
            "DeSync needs the whole published synchformer_state_dict.pth"
        )
    hidden = int(state[key].shape[-1])
    layers = len({k.split(".")[4] for k in state if k.startswith("afeat_extractor.ast.encoder.layer.")})
    intermediate = int(state["afeat_extractor.ast.encoder.layer.0.intermediate.dense.weight"].shape[0])
    audio = AudioBranchConfig(
        hidden=hidden,
        layers=layers,
        heads=int(meta.get("ast_heads", hidden // 64)),
        intermediate=intermediate,
    )
    width = int(state["transformer.OFF_tok"].shape[-1])
    seq = int(state["transformer.pos_emb_cfg.pos_emb"].shape[1])
    per_segment = 8 + audio.time_patches
    head = SyncHeadConfig(
        width=width,
        visual_dim=int(state["vproj.weight"].shape[1]),
        audio_dim=hidden,
        layers=len({k.split(".")[2] for k in state if k.startswith("transformer.blocks.")}),
        heads=int(meta.get("sync_head_heads", 8)),
        window_segments=(seq - 2) // per_segment,
        audio_tokens=audio.time_patches,
        num_offsets=int(state["transformer.off_head.weight"].shape[0]),
    )
    return audio, head


def load_sync_scorer(
    source: str | Path, *, device: torch.device, dtype: torch.dtype, local_files_only: bool = False
) -> SyncScorer:
    """The audio branch and sync head from a whole-Synchformer file, strictly, built on the meta device."""
    path = resolve_file(source, local_files_only=local_files_only, default_filename=SYNCHFORMER_FILENAME)
    meta: dict[str, str] = {}
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    state = split_checkpoint(state)
    audio, head = scorer_config_from_state(state, meta)
    with torch.device("meta"):
        scorer = SyncScorer(audio=audio, head=head)
    scorer.load_state_dict(state, strict=True, assign=True)
    return scorer.to(device=device, dtype=dtype).eval()
