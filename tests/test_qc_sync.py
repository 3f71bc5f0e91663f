"""DeSync: Synchformer's audio branch and sync head against a reference-structured forward, the offset
logic with a hand-built head, strict loading from the whole-Synchformer file, and key manifests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from qc_original_like import (
    ref_ast_tokens,
    ref_compare_v_a,
    ref_desync,
    ref_sync_mel,
    reference_state_keys,
)
from safetensors.torch import load_file, save_file

from thinksound.qc import AudioBranchConfig, SyncHeadConfig, SyncMel, SyncScorer, load_sync_scorer
from thinksound.qc.tiny import build_tiny_qc

REF = Path(__file__).resolve().parents[2] / "shared" / "reference"
SR = 16000
AUDIO = AudioBranchConfig(hidden=48, layers=2, heads=4, intermediate=96)
HEAD = SyncHeadConfig(width=32, visual_dim=24, audio_dim=48, layers=2, heads=4)


def _randomize(module: torch.nn.Module, seed: int, scale: float = 0.1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * scale
            p.copy_(noise + 1.0 if "norm" in name and name.endswith("weight") else noise)


@pytest.fixture(scope="module")
def scorer() -> SyncScorer:
    model = SyncScorer(audio=AUDIO, head=HEAD).eval()
    _randomize(model, seed=3)
    return model


def _noise(seconds: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * SR)) * 0.1).astype(np.float32)


def _visual(seconds: float, seed: int, dim: int) -> torch.Tensor:
    segments = (int(25 * seconds) - 16) // 8 + 1
    return torch.randn(segments * 8, dim, generator=torch.Generator().manual_seed(seed))


def test_offset_grid_is_21_classes_from_minus_2_to_2_in_0_2_steps():
    grid = SyncHeadConfig().offset_grid()
    assert grid.shape == (21,)
    assert grid[0].item() == -2.0 and grid[-1].item() == 2.0
    assert np.allclose(np.diff(grid.numpy()), 0.2)
    assert grid[10].item() == 0.0


def test_mel_front_end_matches_torchaudio_semantics():
    audio = _noise(2.0, seed=1)
    ours = SyncMel()(torch.from_numpy(audio).unsqueeze(0))[0]
    ref = ref_sync_mel(audio)
    assert ours.shape == ref.shape == (5, 128, 66)
    # float32 STFT against float64 numpy: log-mel agrees far below the 0.05+ a wrong window or filter gives.
    assert (ours - ref).abs().max().item() < 2e-3
    assert torch.allclose(ours[..., -1], torch.full_like(ours[..., -1], 4.2677393 / (2 * 4.5689974)))


def test_audio_branch_matches_reference_forward(scorer):
    audio = _noise(1.6, seed=2)
    with torch.no_grad():
        ours = scorer.audio_tokens([torch.from_numpy(audio)])[0]
    ref = ref_ast_tokens(scorer.state_dict(), ref_sync_mel(audio)[None, :, None], heads=AUDIO.heads)[0]
    assert ours.shape == ref.shape == (4, 6, 48)
    assert (ours - ref).abs().max().item() < 1e-4


def test_sync_head_matches_reference_forward(scorer):
    gen = torch.Generator().manual_seed(4)
    vis = torch.randn(2, 14, 8, HEAD.visual_dim, generator=gen)
    aud = torch.randn(2, 14, 6, AUDIO.hidden, generator=gen)
    with torch.no_grad():
        ours = scorer.window_logits(vis, aud)
    ref = ref_compare_v_a(scorer.state_dict(), vis, aud, heads=HEAD.heads)
    assert ours.shape == ref.shape == (2, 21)
    assert (ours - ref).abs().max().item() < 1e-5


def test_desync_matches_av_benchmark_first_and_last_window(scorer):
    seconds = (8.0, 6.0)
    audio = [_noise(s, seed=10 + i) for i, s in enumerate(seconds)]
    visual = [_visual(s, seed=20 + i, dim=HEAD.visual_dim) for i, s in enumerate(seconds)]
    results = scorer.score(visual, [torch.from_numpy(a) for a in audio])
    sd = scorer.state_dict()
    for res, a, v in zip(results, audio, visual, strict=True):
        aud_tokens = ref_ast_tokens(sd, ref_sync_mel(a)[None, :, None], heads=AUDIO.heads)
        segments = aud_tokens.shape[1]
        desync, logits = ref_desync(sd, v.view(1, -1, 8, HEAD.visual_dim)[:, :segments], aud_tokens, heads=HEAD.heads)
        grid = np.linspace(-2, 2, 21)
        assert res.offsets_sec == pytest.approx(tuple(grid[logits[0].argmax(-1)]), abs=1e-6)
        assert res.desync_sec == pytest.approx(desync, abs=1e-6)
        assert len(res.confidences) == 2 and not res.looped
        assert all(0 < c <= 1 for c in res.confidences)


def test_shapes_determinism_and_precisions(scorer):
    visual = [_visual(3.0, seed=5, dim=HEAD.visual_dim)]
    audio = [torch.from_numpy(_noise(3.0, seed=6))]
    first, second = scorer.score(visual, audio), scorer.score(visual, audio)
    assert first == second
    assert first[0].looped and len(first[0].offsets_sec) == 1
    for dtype in (torch.bfloat16, torch.float16):
        low = SyncScorer(audio=AUDIO, head=HEAD)
        low.load_state_dict(scorer.state_dict())
        res = low.to(dtype).eval().score(visual, audio)[0]
        assert np.isfinite(res.desync_sec) and 0 <= res.desync_sec <= 2.0


def test_shifted_audio_changes_the_random_model_output(scorer):
    """Plumbing: the audio really flows into the head (random weights carry no sync knowledge)."""
    vis, aligned = _event_clip(6.0, {})
    _, late = _event_clip(6.0, dict.fromkeys(EVENTS, 0.4))
    window = vis.view(-1, 8, HEAD.visual_dim)[:14].unsqueeze(0)
    with torch.no_grad():
        tokens = scorer.audio_tokens([aligned, late])
        logits = [scorer.window_logits(window, t[:14].unsqueeze(0)) for t in tokens]
    assert (tokens[0] - tokens[1]).abs().max().item() > 1e-2
    # Float noise between identical inputs is ~1e-7; the random head damps the difference, not removes it.
    assert (logits[0] - logits[1]).abs().max().item() > 2e-5


class _EventKernelScorer(SyncScorer):
    """A hand-built Synchformer: tokens carry onset strength, the head correlates the two timelines.

    Audio token j of a segment is the loudest of mel frames 10j..10j+9 (0.1 s; the appended pad column
    is left out); visual token j of a segment
    is the event indicator of its 0.08 s. The head lays a window's tokens on a 10 ms timeline and scores
    each offset class by the correlation of video at t with audio at t + offset: a positive offset means
    the audio comes late.
    """

    def audio_tokens(self, audio, *, segments_per_batch=64):
        out = []
        for a in audio:
            mel = self.mel(a.float().unsqueeze(0))[0].mean(dim=1)[:, :60]  # (S, 60) frame loudness
            tokens = mel.view(-1, 6, 10).amax(dim=-1)
            tokens = tokens - tokens.min()
            out.append(tokens.unsqueeze(-1).expand(-1, -1, self.audio_config.hidden).clone())
        return out

    def window_logits(self, visual, audio):
        n, w = visual.shape[:2]
        steps = (w - 1) * 32 + 64
        v_line = torch.zeros(n, steps)
        a_line = torch.zeros(n, steps)
        for s in range(w):
            for j in range(8):
                lo = s * 32 + j * 8
                v_line[:, lo : lo + 8] = torch.maximum(v_line[:, lo : lo + 8], visual[:, s, j, :1].float())
            for j in range(6):
                lo = s * 32 + j * 10
                a_line[:, lo : lo + 10] = torch.maximum(a_line[:, lo : lo + 10], audio[:, s, j, :1].float())
        logits = []
        for offset in self.offset_grid.tolist():
            lag = round(offset * 100)
            if lag >= 0:
                logits.append((v_line[:, : steps - lag] * a_line[:, lag:]).sum(-1))
            else:
                logits.append((v_line[:, -lag:] * a_line[:, : steps + lag]).sum(-1))
        return torch.stack(logits, dim=-1)


EVENTS = (0.5, 1.7, 2.6, 3.9, 5.2, 6.1, 7.3, 8.6)


def _event_clip(seconds: float, audio_delays: dict[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    segments = (int(25 * seconds) - 16) // 8 + 1
    vis = torch.zeros(segments, 8, HEAD.visual_dim)
    audio = torch.zeros(int(seconds * SR))
    for e in (e for e in EVENTS if e < seconds - 0.7):
        for s in range(segments):
            j = int((e - s * 0.32) // 0.08)
            if 0 <= j < 8:
                vis[s, j, 0] = 1.0
        start = int((e + audio_delays.get(e, 0.0)) * SR)
        audio[start : start + 80] = 1.0
    return vis.flatten(0, 1), audio


@pytest.fixture(scope="module")
def kernel() -> SyncScorer:
    return _EventKernelScorer(audio=AUDIO, head=HEAD).eval()


def test_known_offset_gets_its_class_with_hand_built_head(kernel):
    aligned = _event_clip(8.0, {})
    late = _event_clip(8.0, dict.fromkeys(EVENTS, 0.4))
    early = _event_clip(8.0, dict.fromkeys(EVENTS, -0.6))
    res = kernel.score(*map(list, zip(aligned, late, early, strict=True)))
    assert res[0].offsets_sec == (0.0, 0.0) and res[0].desync_sec == 0.0
    assert res[1].offsets_sec == (0.4, 0.4) and res[1].desync_sec == pytest.approx(0.4)
    assert res[2].offsets_sec == (-0.6, -0.6) and res[2].desync_sec == pytest.approx(0.6)


def test_first_and_last_windows_are_averaged(kernel):
    # 10 s clip: only the events after 4.8 s (in the last window only) come late.
    vis, audio = _event_clip(10.0, {e: 0.8 for e in EVENTS if e > 5.0})
    res = kernel.score([vis], [audio])[0]
    assert res.offsets_sec == (0.0, 0.8)
    assert res.desync_sec == pytest.approx(0.4)


def test_short_clip_is_looped_and_keeps_its_offset(kernel):
    vis, audio = _event_clip(3.0, dict.fromkeys(EVENTS, 0.4))
    res = kernel.score([vis], [audio])[0]
    assert res.looped and res.offsets_sec == (0.4,)


def test_state_dict_keys_match_reference_layout_at_full_size():
    with torch.device("meta"):
        full = SyncScorer()
    sd = full.state_dict()
    assert set(sd) == reference_state_keys(ast_layers=12, head_layers=3)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["afeat_extractor.ast.embeddings.position_embeddings"] == (1, 74, 768)
    assert shapes["afeat_extractor.ast.embeddings.patch_embeddings.projection.weight"] == (768, 1, 16, 16)
    assert shapes["afeat_extractor.freq_attn_agg.self_attn.in_proj_weight"] == (2304, 768)
    assert shapes["transformer.pos_emb_cfg.pos_emb"] == (1, 198, 768)
    assert shapes["transformer.off_head.weight"] == (21, 768)
    assert shapes["vproj.weight"] == shapes["aproj.weight"] == (768, 768)
    # The visual manifest of the published file and ours do not overlap: together they are the whole model.
    visual = json.loads((REF / "synchformer_state_dict.json").read_text())["tensors"]
    assert not set(visual) & set(sd)


def test_loads_strictly_from_the_whole_synchformer_file(tmp_path):
    paths = build_tiny_qc(tmp_path, seed=0)
    state = load_file(str(paths.synchformer))
    assert any(k.startswith("vfeat_extractor.") for k in state)
    scorer = load_sync_scorer(paths.synchformer, device=torch.device("cpu"), dtype=torch.float32)
    own = {k: v for k, v in state.items() if not k.startswith("vfeat_extractor.")}
    assert set(scorer.state_dict()) == set(own) == reference_state_keys(ast_layers=2, head_layers=2)
    assert all(torch.equal(scorer.state_dict()[k], v) for k, v in own.items())

    # A visual-only file (what feature extraction alone needs) is refused with the reason.
    visual_only = tmp_path / "visual.safetensors"
    save_file({k: v for k, v in state.items() if k.startswith("vfeat_extractor.")}, str(visual_only))
    with pytest.raises(ValueError, match="no audio branch"):
        load_sync_scorer(visual_only, device=torch.device("cpu"), dtype=torch.float32)
    # Strict: a missing head tensor fails loudly.
    broken = tmp_path / "broken.safetensors"
    save_file({k: v for k, v in state.items() if k != "transformer.ln_f.bias"}, str(broken))
    with pytest.raises(RuntimeError, match="ln_f.bias"):
        load_sync_scorer(broken, device=torch.device("cpu"), dtype=torch.float32)


def test_tiny_visual_branch_is_unchanged_by_the_added_parts(tmp_path):
    from thinksound.features.weights import load_synchformer

    paths = build_tiny_qc(tmp_path, seed=0)
    enc = load_synchformer(paths.synchformer, device=torch.device("cpu"), dtype=torch.float32)
    assert all(k.startswith("vfeat_extractor.") for k in enc.state_dict())
