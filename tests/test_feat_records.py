"""Feature records: safetensors round trips, the original npz format, batching under npz names."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from thinksound.features import Features, TextFeatures, VideoFeatures


def _video(seed: int = 0, lc: int = 16, ls: int = 40) -> VideoFeatures:
    g = torch.Generator().manual_seed(seed)
    return VideoFeatures(metaclip_features=torch.randn(lc, 64, generator=g), sync_features=torch.randn(ls, 32, generator=g))


def _text(seed: int = 0) -> TextFeatures:
    g = torch.Generator().manual_seed(seed)
    return TextFeatures(
        metaclip_text_features=torch.randn(77, 64, generator=g),
        metaclip_global_text_features=torch.randn(64, generator=g),
        t5_features=torch.randn(77, 48, generator=g),
        t5_tokens=93,
        t5_truncated_tokens=16,
        caption="a dog barks, ünïcode ✓",
        caption_cot="First a bark; then the wind.",
    )


def _assert_same(a: Features, b: Features) -> None:
    assert a.id == b.id
    assert a.tensors().keys() == b.tensors().keys()
    for k, v in a.tensors().items():
        assert torch.equal(v, b.tensors()[k]), k


def test_parts_round_trip_through_bytes():
    v, t = _video(), _text()
    v2 = VideoFeatures.from_bytes(v.to_bytes())
    assert torch.equal(v2.metaclip_features, v.metaclip_features) and torch.equal(v2.sync_features, v.sync_features)
    t2 = TextFeatures.from_bytes(t.to_bytes())
    assert (t2.caption, t2.caption_cot, t2.t5_tokens, t2.t5_truncated_tokens) == (t.caption, t.caption_cot, 93, 16)
    assert torch.equal(t2.t5_features, t.t5_features)


def test_features_file_round_trip_and_npz_names(tmp_path):
    f = Features(video=_video(), text=_text(), id="clip-001")
    f.save(tmp_path / "f.safetensors")
    g = Features.load(tmp_path / "f.safetensors")
    _assert_same(f, g)
    assert g.caption_cot == f.caption_cot and g.t5_truncated_tokens == 16
    assert g.metaclip_features.shape == (16, 64) and g.t5_features.shape == (77, 48)
    with pytest.raises(AttributeError, match="no text"):
        _ = Features(video=_video()).t5_features


def test_npz_round_trip_in_original_format(tmp_path):
    f = Features(video=_video(), text=_text(), id="clip-001")
    path = tmp_path / "clip-001.npz"
    f.save_npz(path)
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {
            "id", "caption", "caption_cot", "metaclip_features", "sync_features",
            "metaclip_global_text_features", "metaclip_text_features", "t5_features",
        }  # fmt: skip
        assert str(z["caption"]) == f.caption and z["t5_features"].dtype == np.float32
    g = Features.load_npz(path)
    _assert_same(f, g)
    assert g.caption == f.caption
    # The counts are not part of the original format.
    assert g.t5_tokens == -1 and g.t5_truncated_tokens == -1


def test_reads_an_npz_written_like_the_original(tmp_path):
    # What extract_latents.py writes: np.savez with strings (its caption bug stores one character).
    rng = np.random.default_rng(0)
    arrays = {
        "metaclip_features": rng.standard_normal((72, 1024)).astype(np.float32),
        "sync_features": rng.standard_normal((216, 768)).astype(np.float32),
        "metaclip_global_text_features": rng.standard_normal(1024).astype(np.float32),
        "metaclip_text_features": rng.standard_normal((77, 1024)).astype(np.float32),
        "t5_features": rng.standard_normal((77, 2048)).astype(np.float32),
    }
    path = tmp_path / "orig.npz"
    np.savez(path, id="vid_1", caption="[", caption_cot="[", **arrays)
    g = Features.load_npz(path)
    assert g.id == "vid_1" and g.caption == "["
    for k, v in arrays.items():
        assert np.array_equal(getattr(g, k).numpy(), v)
    assert Features.from_npz_bytes(g.to_npz_bytes()).tensors().keys() == g.tensors().keys()


def test_npz_with_pickled_objects_is_refused(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, id=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError):
        Features.from_npz_bytes(buf.getvalue())


def test_video_only_and_text_only_records(tmp_path):
    v = Features(video=_video(), id="v")
    t = Features(text=_text(), id="t")
    assert Features.from_bytes(v.to_bytes()).text is None
    assert Features.from_bytes(t.to_bytes()).video is None
    t.save_npz(tmp_path / "t.npz")
    assert Features.load_npz(tmp_path / "t.npz").video is None


def test_collate_stacks_under_npz_names():
    items = [Features(video=_video(i), text=_text(i)) for i in range(3)]
    batch = Features.collate(items)
    assert batch["metaclip_features"].shape == (3, 16, 64)
    assert batch["sync_features"].shape == (3, 40, 32)
    assert batch["t5_features"].shape == (3, 77, 48)
    assert batch["metaclip_global_text_features"].shape == (3, 64)
    assert torch.equal(batch["sync_features"][2], items[2].sync_features)
    text_only = Features.collate([Features(text=_text(i)) for i in range(2)])
    assert "metaclip_features" not in text_only and text_only["t5_features"].shape == (2, 77, 48)
    with pytest.raises(ValueError, match="present in 1 of 2"):
        Features.collate([Features(video=_video()), Features(text=_text())])
    with pytest.raises(ValueError, match="differ in shape"):
        Features.collate([Features(video=_video(ls=40)), Features(video=_video(ls=48))])


def test_records_are_float32_cpu_and_checked():
    v = VideoFeatures(metaclip_features=torch.ones(4, 8, dtype=torch.bfloat16), sync_features=torch.ones(16, 8))
    assert v.metaclip_features.dtype == torch.float32
    with pytest.raises(ValueError, match="2 dims"):
        VideoFeatures(metaclip_features=torch.ones(4), sync_features=torch.ones(16, 8))


def test_records_and_errors_pickle():
    # Prefect may move results and exceptions between processes.
    import pickle

    from thinksound.features import VideoDecodeError

    f = Features(video=_video(), text=_text(), id="p")
    g = pickle.loads(pickle.dumps(f))
    _assert_same(f, g)
    assert g.t5_tokens == 93
    err = pickle.loads(pickle.dumps(VideoDecodeError("no video stream", path="/a.mp4")))
    assert isinstance(err, VideoDecodeError) and err.reason == "no video stream" and err.path == "/a.mp4"
