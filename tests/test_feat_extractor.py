"""FeatureExtractor on the tiny preset: shapes, batching, video/text separation, T5 truncation report.

The tiny models are random: their features are noise with the right shapes, nothing more.
"""

from __future__ import annotations

import pytest
import torch
from feat_media import make_testsrc

from thinksound.features import FeatureExtractor, Features, decode_clip
from thinksound.features.tiny import build_tiny


@pytest.fixture(scope="module")
def ext() -> FeatureExtractor:
    return FeatureExtractor.from_preset("tiny", device="cpu", precision="fp32", seed=0)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("feat_ext_videos")
    a = make_testsrc(root / "a.mp4", size="128x72", rate=25, duration=2.0, codec_args=["-c:v", "libx264"])
    b = make_testsrc(root / "b.webm", size="96x128", rate=30, duration=1.5, codec_args=["-c:v", "libvpx"])
    return [decode_clip(a, duration_sec=2.0), decode_clip(b, duration_sec=1.0), decode_clip(a, duration_sec=1.5)]


def test_tiny_widths_and_lengths(ext, clips):
    assert ext.is_random_init
    feats = ext.encode_videos(clips)
    # (Lc, Ls): Lc = int(8 D), Ls = 8 * ((int(25 D) - 16) // 8 + 1)
    assert [tuple(f.metaclip_features.shape) for f in feats] == [(16, 64), (8, 64), (12, 64)]
    assert [tuple(f.sync_features.shape) for f in feats] == [(40, 64), (16, 64), (24, 64)]
    text = ext.encode_texts(["a dog barks"], ["A dog barks twice, then a car passes."])[0]
    assert text.metaclip_text_features.shape == (77, 64)
    assert text.metaclip_global_text_features.shape == (64,)
    assert text.t5_features.shape == (77, 64)
    assert all(t.dtype == torch.float32 for t in (*feats[0].tensors().values(), *text.tensors().values()))


def test_batched_equals_per_item(ext, clips):
    batched = ext.encode_videos(clips)
    small = FeatureExtractor.from_preset("tiny", seed=0, clip_batch_frames=5, sync_batch_segments=1)
    for clip, b in zip(clips, batched, strict=True):
        one = ext.encode_videos([clip])[0]
        chunked = small.encode_videos([clip])[0]
        for other in (one, chunked):
            assert (other.metaclip_features - b.metaclip_features).abs().max() < 1e-5
            assert (other.sync_features - b.sync_features).abs().max() < 1e-5
    caps, cots = ["rain", "a dog barks", "applause"], ["Rain on a roof.", "Barking.", "Clapping hands."]
    texts = ext.encode_texts(caps, cots)
    for i in range(3):
        one = ext.encode_texts([caps[i]], [cots[i]])[0]
        assert (one.t5_features - texts[i].t5_features).abs().max() < 1e-5
        assert (one.metaclip_text_features - texts[i].metaclip_text_features).abs().max() < 1e-5


def test_clip_features_match_transformers_definitions(ext, clips):
    clip = ext._load_clip()
    frames = clips[1].clip_frames
    with torch.no_grad():
        ref = clip.model.get_image_features(pixel_values=frames).pooler_output
    assert torch.allclose(ext.encode_videos([clips[1]])[0].metaclip_features, ref, atol=1e-5)
    tok = clip.tokenizer(["a dog"], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = clip.model.text_model(**tok)
        eos = int((tok["input_ids"][0] == clip.model.config.text_config.eos_token_id).nonzero()[0])
        pooled = clip.model.text_projection(out.last_hidden_state[0, eos])
    t = ext.encode_texts(["a dog"], ["x"])[0]
    assert torch.allclose(t.metaclip_global_text_features, pooled, atol=1e-6)
    assert torch.allclose(t.metaclip_text_features, out.last_hidden_state[0], atol=1e-6)


def test_video_and_text_are_separate():
    ext = FeatureExtractor.from_preset("tiny", seed=0)
    ext.encode_texts(["a"], ["b"])
    assert ext._sync is None  # text never loads the video encoder
    ext2 = FeatureExtractor.from_preset("tiny", seed=0)
    assert ext2.count_t5_tokens("hello") > 0
    assert ext2._t5 is None and ext2._clip is None  # counting needs only the tokenizer


def test_versions_track_only_their_own_models(tmp_path):
    a = build_tiny(tmp_path / "a", seed=0)
    b = build_tiny(tmp_path / "b", seed=1)
    base = FeatureExtractor.from_pretrained(clip=a.clip, t5=a.t5, synchformer=a.synchformer, local_files_only=True)
    new_t5 = FeatureExtractor.from_pretrained(clip=a.clip, t5=b.t5, synchformer=a.synchformer, local_files_only=True)
    new_sync = FeatureExtractor.from_pretrained(clip=a.clip, t5=a.t5, synchformer=b.synchformer, local_files_only=True)
    assert base.video_version == new_t5.video_version
    assert base.text_version != new_t5.text_version
    assert base.text_version == new_sync.text_version
    assert base.video_version != new_sync.video_version
    again = build_tiny(tmp_path / "a2", seed=0)
    same = FeatureExtractor.from_pretrained(clip=again.clip, t5=again.t5, synchformer=again.synchformer)
    assert (same.video_version, same.text_version) == (base.video_version, base.text_version)
    half = FeatureExtractor.from_pretrained(clip=a.clip, t5=a.t5, synchformer=a.synchformer, precision="bf16")
    assert half.video_version != base.video_version
    t0 = FeatureExtractor.from_preset("tiny", seed=0)
    assert t0.video_version == FeatureExtractor.from_preset("tiny", seed=0).video_version
    assert t0.video_version != FeatureExtractor.from_preset("tiny", seed=1).video_version


def test_from_pretrained_dir_equals_preset_and_is_deterministic(ext, clips, tmp_path):
    state = torch.random.get_rng_state()
    paths = build_tiny(tmp_path / "tiny", seed=0)
    assert torch.equal(state, torch.random.get_rng_state())  # building leaves the global RNG alone
    loaded = FeatureExtractor.from_pretrained(
        clip=paths.clip, t5=paths.t5, synchformer=paths.synchformer, local_files_only=True
    )
    assert not loaded.is_random_init
    a, b = ext.encode_videos(clips[:1])[0], loaded.encode_videos(clips[:1])[0]
    assert torch.equal(a.metaclip_features, b.metaclip_features)
    assert torch.equal(a.sync_features, b.sync_features)
    other = FeatureExtractor.from_preset("tiny", seed=1).encode_videos(clips[:1])[0]
    assert not torch.allclose(other.sync_features, a.sync_features)


def test_t5_token_count_and_truncation(ext):
    short = "Rain falls on a tin roof."
    n = ext.count_t5_tokens(short)
    t = ext.encode_texts(["rain"], [short])[0]
    assert t.t5_tokens == n and t.t5_truncated_tokens == 0 and 2 < n < 77
    base = "The dog barks loudly while cars pass by on the wet street. " * 7
    assert ext.count_t5_tokens(base) > 77
    long_a, long_b = base + "Then thunder.", base + "Afterwards birds sing."
    ta, tb = ext.encode_texts(["x", "x"], [long_a, long_b])
    assert ta.t5_tokens == ext.count_t5_tokens(long_a)
    assert ta.t5_truncated_tokens == ta.t5_tokens - 77 > 0
    # Both differ only after the 77-token cut, so their (truncated) T5 states are identical.
    assert torch.equal(ta.t5_features, tb.t5_features)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precisions_run_and_return_float32(clips, precision):
    ref = FeatureExtractor.from_preset("tiny", seed=0)
    half = FeatureExtractor.from_preset("tiny", seed=0, precision=precision)
    r, h = ref.encode_videos(clips[1:2])[0], half.encode_videos(clips[1:2])[0]
    assert h.sync_features.dtype == torch.float32
    assert torch.isfinite(h.sync_features).all() and torch.isfinite(h.metaclip_features).all()
    assert (h.sync_features - r.sync_features).abs().max() < 0.1 * r.sync_features.abs().max() + 0.05
    t = half.encode_texts(["rain"], ["Rain falls."])[0]
    assert torch.isfinite(t.t5_features).all()


def test_errors(ext):
    with pytest.raises(ValueError, match="precision"):
        FeatureExtractor.from_preset("tiny", precision="int8")
    with pytest.raises(ValueError, match="preset"):
        FeatureExtractor.from_preset("huge")
    with pytest.raises(ValueError, match="captions"):
        ext.encode_texts(["a", "b"], ["c"])
    assert ext.encode_videos([]) == []


def test_features_record_from_extractor_round_trips(ext, clips, tmp_path):
    f = Features(video=ext.encode_videos(clips[:1])[0], text=ext.encode_texts(["a"], ["b"])[0], id="x")
    f.save_npz(tmp_path / "x.npz")
    g = Features.load_npz(tmp_path / "x.npz")
    assert torch.equal(g.sync_features, f.sync_features) and g.caption_cot == "b"


def test_package_imports_no_pipeline_modules():
    import subprocess
    import sys

    code = (
        "import sys, thinksound.features\n"
        "bad = [m for m in ('prefect', 'duckdb', 'minio', 'storage', 'tasks', 'flows') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == ""


def test_from_models_wraps_built_encoders(ext, clips):
    wrapped = FeatureExtractor.from_models(
        clip=ext._load_clip(),
        synchformer=ext._load_sync(),
        identity={"clip": "c", "t5": "t", "synchformer": "s"},
        is_random_init=True,
    )
    a, b = ext.encode_videos(clips[1:2])[0], wrapped.encode_videos(clips[1:2])[0]
    assert torch.equal(a.sync_features, b.sync_features)
    assert wrapped.video_version.startswith("video-")
    with pytest.raises(RuntimeError, match="without a t5 encoder"):
        wrapped.encode_texts(["a"], ["b"])
