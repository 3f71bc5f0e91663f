"""Frame transforms: the CLIP stream against transformers' own processor, the sync stream's geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from thinksound.features.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    clip_frame_uint8,
    clip_normalise,
    pad_to_square,
    sync_frame_uint8,
    sync_normalise,
)

SIZES = [(97, 175), (175, 97), (96, 176), (224, 224), (100, 100), (480, 640), (223, 500), (120, 224), (720, 1280)]


def _metaclip_processor() -> CLIPImageProcessorPil:
    # facebook/metaclip-h14-fullcc2.5b preprocessor_config.json values
    return CLIPImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": 224},
        resample=3,
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    )


def _frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_pad_to_square_centres_with_floor_on_top_left():
    f = np.full((3, 8, 3), 200, np.uint8)
    sq = pad_to_square(f)
    assert sq.shape == (8, 8, 3)
    # pad 5 rows: floor(5/2) = 2 on top, 3 below
    assert (sq[:2] == 0).all() and (sq[2:5] == 200).all() and (sq[5:] == 0).all()
    assert pad_to_square(_frame(5, 5)) is not None and pad_to_square(_frame(5, 5)).shape == (5, 5, 3)


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_clip_stream_equals_transformers_processor(h, w):
    frame = _frame(h, w)
    ref = _metaclip_processor()(
        images=[torch.from_numpy(pad_to_square(frame)).permute(2, 0, 1)], return_tensors="pt"
    )["pixel_values"]
    ours = clip_normalise(torch.from_numpy(clip_frame_uint8(frame))[None])
    assert ours.shape == (1, 3, 224, 224) and ours.dtype == torch.float32
    assert torch.equal(ours, ref)


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_sync_stream_resizes_short_side_and_centre_crops(h, w):
    # Smooth content: there the uint8 kernel (torchvision's CPU path, which the original ran) and the
    # float kernel (torchvision's GPU path) agree to a level; on noise the uint8 kernel's intermediate
    # rounding between its two passes makes them differ more, so noise would not test geometry.
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    frame = np.stack([200 * yy, 200 * xx, 120 + 100 * np.sin(6 * xx + 3 * yy)], -1).round().astype(np.uint8)
    out = sync_frame_uint8(frame)
    assert out.shape == (3, 224, 224) and out.dtype == torch.uint8
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    new_h, new_w = (224, int(224 * w / h)) if h <= w else (int(224 * h / w), 224)
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=[new_h, new_w], mode="bicubic", align_corners=False, antialias=True)
    x = x.clamp(0, 255).round().to(torch.uint8)[0]
    top, left = int(round((new_h - 224) / 2)), int(round((new_w - 224) / 2))
    ref = x[:, top : top + 224, left : left + 224]
    assert (out.int() - ref.int()).abs().max() <= 1
    # and exactly torch's uint8 kernel on the same geometry
    native = (
        F.interpolate(
            torch.from_numpy(frame).permute(2, 0, 1)[None],
            size=[new_h, new_w],
            mode="bicubic",
            antialias=True,
        )[0]
        if (new_h, new_w) != (h, w)
        else torch.from_numpy(frame).permute(2, 0, 1)
    )
    assert torch.equal(out, native[:, top : top + 224, left : left + 224])


def test_sync_stream_keeps_a_224_frame_and_flat_colours():
    frame = _frame(224, 300)
    out = sync_frame_uint8(frame)
    # 224 short side: no resize, only the centre crop (38 columns off the left).
    assert torch.equal(out, torch.from_numpy(frame[:, 38:262]).permute(2, 0, 1))
    flat = np.full((97, 175, 3), 77, np.uint8)
    assert (sync_frame_uint8(flat) == 77).all()


def test_sync_normalise_maps_to_unit_range():
    u = torch.tensor([0, 255, 128], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2)[None]
    x = sync_normalise(u)
    assert x.dtype == torch.float32
    assert x[0, 0].eq(-1).all() and x[0, 1].eq(1).all()
    assert torch.allclose(x[0, 2], torch.tensor(128 / 255 * 2 - 1), atol=1e-6)
