"""Per-frame preprocessing of the two video streams, as the original extractor does it.

CLIP stream (8 fps): centred zero padding to a square, then the MetaCLIP ``CLIPImageProcessor``:
PIL bicubic resize of the shortest edge to 224, centre crop 224, rescale by 1/255 (computed in float64,
stored as float32), normalise with the CLIP mean and std in float32.

Sync stream (25 fps): torchvision-v2 semantics on uint8 frames: antialiased bicubic resize of the
short side to 224 (the long side is truncated with ``int``), rounded back to uint8, centre crop 224,
``to(float32) * (1/255)``, then ``(x - 0.5) / 0.5``.

Frames are resized one by one as they come out of the decoder, so a long or large video is never held
at full resolution; the float conversion happens once per clip on the small uint8 stacks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

FRAME_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SYNC_MEAN = 0.5
SYNC_STD = 0.5


def pad_to_square(frame: np.ndarray) -> np.ndarray:
    """Zero-pad an (H, W, 3) uint8 frame to a centred square; left/top get floor(pad / 2)."""
    h, w, c = frame.shape
    side = max(h, w)
    if h == w:
        return frame
    out = np.zeros((side, side, c), dtype=frame.dtype)
    top = (side - h) // 2
    left = (side - w) // 2
    out[top : top + h, left : left + w] = frame
    return out


def _pil_bicubic(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.array(Image.fromarray(frame).resize((width, height), resample=Image.BICUBIC))


def clip_frame_uint8(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (224, 224, 3) uint8: pad to a square, then PIL bicubic to 224.

    On a square the processor's shortest-edge resize gives 224 x 224 and its centre crop is a no-op.
    """
    h, w = frame.shape[:2]
    side = max(h, w)
    if side == FRAME_SIZE:
        return pad_to_square(frame)
    if w > h:
        # PIL resamples horizontally first (rounding to uint8), then vertically, and a zero row stays
        # zero; so resizing the content rows alone and padding in between gives the same bytes as
        # resizing the padded square, without building the square.
        rows = _pil_bicubic(frame, FRAME_SIZE, h)
        tall = np.zeros((side, FRAME_SIZE, frame.shape[2]), dtype=np.uint8)
        top = (side - h) // 2
        tall[top : top + h] = rows
        return _pil_bicubic(tall, FRAME_SIZE, FRAME_SIZE)
    return _pil_bicubic(pad_to_square(frame), FRAME_SIZE, FRAME_SIZE)


def clip_normalise(frames: torch.Tensor) -> torch.Tensor:
    """(T, 224, 224, 3) uint8 -> (T, 3, 224, 224) float32 with the CLIP mean/std."""
    # Rescale in float64 then cast, as transformers' rescale() does, so the float32 values match bit for bit.
    x = (frames.to(torch.float64) * (1 / 255)).to(torch.float32)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32)
    std = torch.tensor(CLIP_STD, dtype=torch.float32)
    x = (x - mean) / std
    return x.permute(0, 3, 1, 2).contiguous()


def _short_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    # torchvision's _compute_resized_output_size for a single int size.
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return new_h, new_w


def sync_frame_uint8(frame: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, 224, 224) uint8: antialiased bicubic short-side resize, centre crop."""
    x = torch.from_numpy(np.require(frame, requirements=["C", "W"])).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
    h, w = x.shape[-2:]
    new_h, new_w = _short_side_size(h, w, FRAME_SIZE)
    if (new_h, new_w) != (h, w):
        # On CPU torchvision feeds uint8 straight into the native uint8 antialiased bicubic kernel, which
        # rounds and saturates internally; doing the same keeps the original's exact integers.
        x = F.interpolate(x, size=[new_h, new_w], mode="bicubic", align_corners=False, antialias=True)
    x = x[0]
    top = int(round((new_h - FRAME_SIZE) / 2.0))
    left = int(round((new_w - FRAME_SIZE) / 2.0))
    return x[:, top : top + FRAME_SIZE, left : left + FRAME_SIZE].contiguous()


def sync_normalise(frames: torch.Tensor) -> torch.Tensor:
    """(T, 3, 224, 224) uint8 -> float32 in [-1, 1], with torchvision's op order."""
    x = frames.to(torch.float32).mul_(1.0 / 255)
    return x.sub_(SYNC_MEAN).div_(SYNC_STD)
