"""Feature-extraction benchmark for one 9 s clip: decode per stream, encode per model, peak RSS.

Run: .venv/bin/python bench/bench_features.py [--full] [--clip-frames 2] [--sync-segments 1]

- tiny preset: random small models (noise outputs), timed on the whole clip;
- --full: the full-size architectures with RANDOM weights built from configs (no download):
  MetaCLIP-H/14 (vision 1280x32, text 1024x24, projection 1024), T5-v1.1-XL encoder (2048, 24 layers),
  Synchformer (768, 12 layers). On a small CPU the image and sync encoders are timed on a reduced
  number of frames/segments and extrapolated linearly to the clip (marked "extrapolated").
- on CUDA, with --full: clips/s of the full extractor in bf16 at batch 8 and 32.
"""

from __future__ import annotations

import argparse
import gc
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import imageio_ffmpeg
import psutil
import torch
from transformers import CLIPConfig, CLIPModel, T5Config, T5EncoderModel

from thinksound.features import FeatureExtractor, Synchformer, decode_clip, nominal_frame_counts
from thinksound.features.clip import MetaClipEncoder
from thinksound.features.t5 import T5TextEncoder
from thinksound.features.tiny import build_tiny
from thinksound.features.transforms import clip_frame_uint8, sync_frame_uint8
from thinksound.features.video import CLIP_FPS, SYNC_FPS, _decode_window

DURATION = 9.0
LAST_CPU = 0.0
CAPTION = "a man plays an acoustic guitar in a small room"
COT = (
    "The video shows a man strumming an acoustic guitar indoors. The audio should contain warm, "
    "steady guitar chords with a slight room reverb, soft finger noise on the strings, and no speech. "
    "The rhythm is calm and regular, about ninety beats per minute."
)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(fn: Callable[[], object], *, repeat: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeat`` runs; the CPU time of that run goes to LAST_CPU (shared box)."""
    global LAST_CPU
    best, out = float("inf"), None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - t
        if wall < best:
            best, LAST_CPU = wall, time.process_time() - c
    return best, out


def cpu(scale: float = 1.0) -> str:
    return f"[cpu {LAST_CPU * scale:6.2f} s]"


def make_clip(root: Path, size: str) -> Path:
    path = root / f"clip_{size}.mp4"
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30:duration={DURATION}",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


def decode_one_stream(path: Path, fps: int) -> int:
    n_clip, n_sync = nominal_frame_counts(DURATION)
    transform, limit = (clip_frame_uint8, n_clip) if fps == CLIP_FPS else (sync_frame_uint8, n_sync)
    (sampler,) = _decode_window(path, [(fps, limit, transform)], 0.0)
    return len(sampler.frames)


def bench_decode(root: Path) -> object:
    print(f"== decode, {DURATION:.0f} s clip (h264 30 fps), torch threads {torch.get_num_threads()}; wall [cpu]")
    clip = None
    for size in ("640x360", "1920x1080"):
        path = make_clip(root, size)
        t_clip, n = timed(lambda p=path: decode_one_stream(p, CLIP_FPS), repeat=2)
        print(f"  {size:>9}  clip stream  8 fps: {t_clip:6.2f} s {cpu()} for {n} frames")
        t_sync, n = timed(lambda p=path: decode_one_stream(p, SYNC_FPS), repeat=2)
        print(f"  {size:>9}  sync stream 25 fps: {t_sync:6.2f} s {cpu()} for {n} frames")
        t_both, c = timed(lambda p=path: decode_clip(p, duration_sec=DURATION), repeat=2)
        print(f"  {size:>9}  both (one pass, decode_clip): {t_both:6.2f} s {cpu()}")
        clip = clip or c
    print(f"  peak RSS so far {peak_rss_gb():.2f} GB")
    return clip


def bench_tiny(clip) -> None:
    print("== tiny preset (random weights: outputs are noise), fp32 CPU, whole clip")
    t_build, ext = timed(lambda: FeatureExtractor.from_preset("tiny", seed=0).load_all())
    print(f"  build + load: {t_build:.2f} s")
    report_models(ext, clip, clip_frames=None, sync_segments=None)


def report_models(ext: FeatureExtractor, clip, *, clip_frames: int | None, sync_segments: int | None) -> None:
    n_frames = clip.clip_frames.shape[0]
    sync = ext._load_sync()
    n_segments = sync.num_segments(clip.sync_frames.shape[0])
    frames = clip.clip_frames[:clip_frames] if clip_frames else clip.clip_frames
    video = clip.sync_frames[: 16 + 8 * (sync_segments - 1)] if sync_segments else clip.sync_frames
    clip_enc = ext._load_clip()
    t, _ = timed(lambda: clip_enc.encode_images(frames), repeat=1 if clip_frames else 2)
    scale = n_frames / frames.shape[0]
    tag = f" (timed {frames.shape[0]} frames, extrapolated x{scale:.0f})" if scale > 1 else ""
    print(f"  MetaCLIP image, {n_frames} frames: {t * scale:8.2f} s {cpu(scale)}{tag}")
    with torch.inference_mode():
        t, _ = timed(lambda: sync.encode(video[None].to(ext.dtype)), repeat=1 if sync_segments else 2)
    done = sync.num_segments(video.shape[0])
    scale = n_segments / done
    tag = f" (timed {done} segments, extrapolated x{scale:.1f})" if scale > 1 else ""
    print(f"  Synchformer, {n_segments} segments: {t * scale:8.2f} s {cpu(scale)}{tag}")
    t, _ = timed(lambda: clip_enc.encode_texts([CAPTION]), repeat=2)
    print(f"  MetaCLIP text, 1 caption: {t:8.2f} s {cpu()}")
    t5 = ext._load_t5()
    t, _ = timed(lambda: t5.encode([COT]), repeat=2)
    print(f"  T5 encoder, 1 CoT text ({t5.count_tokens(COT)} tokens, 77 kept): {t:8.2f} s {cpu()}")
    print(f"  peak RSS so far {peak_rss_gb():.2f} GB (now {psutil.Process().memory_info().rss / 2**30:.2f} GB)")


def metaclip_h_config(eos: int) -> CLIPConfig:
    return CLIPConfig(
        text_config={
            "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
            "num_attention_heads": 16, "hidden_act": "gelu", "eos_token_id": eos,
        },
        vision_config={
            "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
            "num_attention_heads": 16, "patch_size": 14, "image_size": 224, "hidden_act": "gelu",
        },
        projection_dim=1024,
    )  # fmt: skip


def t5_xl_config() -> T5Config:
    return T5Config(
        vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32,
        feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
    )  # fmt: skip


def full_extractor(tok_dir: Path, device: str, precision: str) -> FeatureExtractor:
    """Full-size architectures, random weights; the tiny tokenizers stand in (ids fit both vocabs)."""
    from transformers import AutoTokenizer

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    clip_tok = AutoTokenizer.from_pretrained(tok_dir / "metaclip")
    t5_tok = AutoTokenizer.from_pretrained(tok_dir / "t5")
    t = time.perf_counter()
    clip = MetaClipEncoder(
        model=CLIPModel(metaclip_h_config(clip_tok.eos_token_id)), tokenizer=clip_tok, device=torch.device(device),
        dtype=dtype,
    )
    t5 = T5TextEncoder(model=T5EncoderModel(t5_xl_config()), tokenizer=t5_tok, device=torch.device(device), dtype=dtype)
    sync = Synchformer()
    print(f"  built full-size random models in {time.perf_counter() - t:.1f} s")
    params = {
        "MetaCLIP-H": sum(p.numel() for p in clip.model.parameters()),
        "T5-XL encoder": sum(p.numel() for p in t5.model.parameters()),
        "Synchformer": sum(p.numel() for p in sync.parameters()),
    }
    print("  params: " + ", ".join(f"{k} {v / 1e6:.0f} M" for k, v in params.items()))
    return FeatureExtractor.from_models(
        clip=clip, t5=t5, synchformer=sync, identity={"clip": "random", "t5": "random", "synchformer": "random"},
        is_random_init=True, device=device, precision=precision,
    )  # fmt: skip


def bench_full(clip, tok_dir: Path, *, clip_frames: int, sync_segments: int) -> None:
    print("== full-size architectures, RANDOM weights, fp32 CPU")
    ext = full_extractor(tok_dir, "cpu", "fp32")
    report_models(ext, clip, clip_frames=clip_frames, sync_segments=sync_segments)
    del ext
    gc.collect()


def bench_gpu(clip, tok_dir: Path) -> None:
    print(f"== full-size, RANDOM weights, bf16 on {torch.cuda.get_device_name()}")
    ext = full_extractor(tok_dir, "cuda", "bf16")
    for batch in (8, 32):
        clips = [clip] * batch
        ext.encode_videos(clips[:2])  # warm-up
        torch.cuda.synchronize()
        t, _ = timed(lambda c=clips: ext.encode_videos(c))
        torch.cuda.synchronize()
        print(f"  encode_videos batch {batch}: {t:.2f} s -> {batch / t:.2f} clips/s")
        t, _ = timed(lambda b=batch: ext.encode_texts([CAPTION] * b, [COT] * b))
        print(f"  encode_texts batch {batch}: {t:.2f} s -> {batch / t:.2f} texts/s")
    print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="also time the full-size random architectures")
    ap.add_argument("--clip-frames", type=int, default=2, help="frames timed for full MetaCLIP-H on CPU")
    ap.add_argument("--sync-segments", type=int, default=1, help="segments timed for full Synchformer on CPU")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        root = Path(tmp)
        clip = bench_decode(root)
        bench_tiny(clip)
        if args.full:
            tok_dir = root / "tok"
            build_tiny(tok_dir, seed=0)
            bench_full(clip, tok_dir, clip_frames=args.clip_frames, sync_segments=args.sync_segments)
            if torch.cuda.is_available():
                bench_gpu(clip, tok_dir)
    print(f"peak RSS {peak_rss_gb():.2f} GB; load average {psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
