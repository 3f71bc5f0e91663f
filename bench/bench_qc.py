"""Benchmark of the listening QC (DeSync, CLAP, speech/music tagger) on CPU.

    .venv/bin/python bench/bench_qc.py                 # tiny models + pipeline share + best-of ratio
    .venv/bin/python bench/bench_qc.py --full          # also the full-size architectures (random weights)

Prints:
- QC time per clip for each model, tiny presets, on a clip of --clip-sec seconds (median of --reps);
- with --full, the same for the full-size architectures with RANDOM weights built from configs (no
  download): Synchformer's audio branch + sync head, CLAP (HTSAT-base audio + RoBERTa-base text, the
  sizes of laion/larger_clap_general) and the AST AudioSet tagger. A model timed on part of a clip
  (--full-segments AST segments, one tagger window) is extrapolated linearly and marked so;
- the share of QC in a whole tiny pipeline run (Prefect flow, real storage and lineage) per stage;
- the cost of --best-of 4 against --best-of 1 on the same videos: synthesis + qc wall time and the
  whole run, as ratios (batching makes them far below 4x).
Random weights measure cost, not quality.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-prefect-"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from thinksound.qc import SyncScorer, load_sync_scorer  # noqa: E402
from thinksound.qc.clap import ClapScorer  # noqa: E402
from thinksound.qc.frontend import resample, to_mono  # noqa: E402
from thinksound.qc.tagger import AudioTagger, window_starts  # noqa: E402
from thinksound.qc.tiny import build_tiny_qc  # noqa: E402

SR = 44100
CPU = torch.device("cpu")


def _median_time(fn, reps: int) -> float:
    fn()  # warm-up: first calls allocate and pick kernels
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _clip(seconds: float) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal((2, int(seconds * SR))) * 0.1).astype(np.float32)


def _sync_inputs(scorer: SyncScorer, audio: np.ndarray, seconds: float):
    segments = (int(25 * seconds) - 16) // 8 + 1
    visual = torch.randn(segments * 8, scorer.head_config.visual_dim)
    audio16 = torch.from_numpy(resample(to_mono(audio), SR, 16000))
    return [visual], [audio16]


def bench_models(sync: SyncScorer, clap: ClapScorer, tagger: AudioTagger, seconds: float, reps: int) -> dict:
    audio = _clip(seconds)
    visual, audio16 = _sync_inputs(sync, audio, seconds)
    with torch.no_grad():
        return {
            "DeSync (Synchformer audio branch + head)": _median_time(lambda: sync.score(visual, audio16), reps),
            "CLAP": _median_time(lambda: clap.score([audio], SR, ["a dog barks near a road"]), reps),
            "AST tagger": _median_time(lambda: tagger.tag([audio], SR), reps),
        }


def full_models():
    from transformers import (
        ASTConfig,
        ASTFeatureExtractor,
        ASTForAudioClassification,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
    )

    from thinksound.qc.tiny import _roberta_tokenizer

    t = time.perf_counter()
    sync = SyncScorer().eval()
    clap_cfg = ClapConfig(
        text_config={"vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1},
        audio_config={"depths": [2, 2, 12, 2], "hidden_size": 1024, "patch_embeds_hidden_size": 128,
                      "num_attention_heads": [4, 8, 16, 32], "enable_fusion": False},
        projection_dim=512,
    )
    clap = ClapScorer(model=ClapModel(clap_cfg).eval(), feature_extractor=ClapFeatureExtractor(truncation="rand_trunc"),
                      tokenizer=_roberta_tokenizer(), device=CPU, dtype=torch.float32)
    labels = {i: "Speech" if i == 0 else "Music" if i == 137 else f"c{i}" for i in range(527)}
    tagger = AudioTagger(model=ASTForAudioClassification(ASTConfig(id2label=labels, label2id={})).eval(),
                         feature_extractor=ASTFeatureExtractor(), device=CPU, dtype=torch.float32)
    params = {name: sum(p.numel() for p in m.parameters()) / 1e6
              for name, m in (("sync", sync), ("clap", clap.model), ("ast", tagger.model))}
    print(f"  built full-size random models in {time.perf_counter() - t:.1f} s; parameters (M): "
          + ", ".join(f"{k} {v:.0f}" for k, v in params.items()))
    return sync, clap, tagger


def bench_full(seconds: float, segments: int) -> dict:
    sync, clap, tagger = full_models()
    audio = _clip(seconds)
    visual, audio16 = _sync_inputs(sync, audio, seconds)
    out = {}
    with torch.no_grad():
        clip_segments = sync.mel(audio16[0].unsqueeze(0)).shape[1]
        part = audio16[0][: 10240 + 5120 * (segments - 1)]
        ast_part = _median_time(lambda: sync.audio_tokens([part]), 1)
        tokens = sync.audio_tokens([audio16[0]])[0]
        windows = 2 if clip_segments >= sync.head_config.window_segments else 1
        w = sync.head_config.window_segments
        vis = torch.randn(windows, w, 8, sync.head_config.visual_dim)
        head = _median_time(lambda: sync.window_logits(vis, tokens[:w].expand(windows, -1, -1, -1)), 1)
        out[f"DeSync (AST timed on {segments} of {clip_segments} segments, extrapolated)"] = (
            ast_part * clip_segments / segments + head
        )
        out["CLAP (one forward = one clip)"] = _median_time(lambda: clap.score([audio], SR, ["rain"]), 1)
        window = audio[:, : int(tagger.window / 16000 * SR)]
        per_window = _median_time(lambda: tagger.tag([window], SR), 1)
        n_windows = len(window_starts(int(seconds * 16000), tagger.window, tagger.hop))
        out[f"AST tagger (one window timed, x{n_windows} windows)"] = per_window * n_windows
    return out


def bench_pipeline(videos: Path, best_of: int) -> tuple[float, dict[str, float]]:
    from flows.dub import dub_dataset
    from tasks.config import PipelineSettings, QualitySettings

    with tempfile.TemporaryDirectory(prefix="bench-qc-") as work:
        settings = PipelineSettings(workdir=work, steps=8, batch_size=8, max_duration_sec=4.0,
                                    quality=QualitySettings(best_of=best_of))
        start = time.perf_counter()
        result = dub_dataset(input=str(videos), settings=settings)
        wall = time.perf_counter() - start
    assert result["counts"].get("succeeded") == len(list(videos.iterdir())), result["counts"]
    return wall, result["stage_seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip-sec", type=float, default=8.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--videos", type=int, default=4, help="videos in each pipeline run")
    ap.add_argument("--full", action="store_true", help="also time the full-size random architectures")
    ap.add_argument("--full-segments", type=int, default=2, help="AST segments timed for full DeSync on CPU")
    ap.add_argument("--skip-pipeline", action="store_true")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, clip {args.clip_sec} s")

    with tempfile.TemporaryDirectory() as d:
        paths = build_tiny_qc(d)
        tiny = (
            load_sync_scorer(paths.synchformer, device=CPU, dtype=torch.float32),
            ClapScorer.from_pretrained(paths.clap, device=CPU, dtype=torch.float32, local_files_only=True),
            AudioTagger.from_pretrained(paths.tagger, device=CPU, dtype=torch.float32, local_files_only=True),
        )
        print("\n== QC time per clip, tiny presets (median)")
        times = bench_models(*tiny, args.clip_sec, args.reps)
        for name, sec in times.items():
            print(f"  {name:60s} {sec * 1000:9.1f} ms")
        print(f"  {'total':60s} {sum(times.values()) * 1000:9.1f} ms")

    if args.full:
        print("\n== QC time per clip, full-size architectures, RANDOM weights, fp32 CPU")
        times = bench_full(args.clip_sec, args.full_segments)
        for name, sec in times.items():
            print(f"  {name:60s} {sec:9.2f} s")
        print(f"  {'total':60s} {sum(times.values()):9.2f} s")

    if args.skip_pipeline:
        return
    from media import make_video

    from flows.embedded_api import embedded_prefect_api

    with (
        tempfile.TemporaryDirectory(prefix="bench-qc-videos-") as folder,
        embedded_prefect_api(Path(tempfile.gettempdir()) / "bench-qc-prefect-api.log") as api,
    ):
        if api:
            api.wait_ready()
        for n in range(args.videos):
            make_video(Path(folder) / f"v{n}.mp4", duration=2.0 + 0.5 * (n % 3), size="64x64")
        bench_pipeline(Path(folder), 1)  # warm-up: model loading and first-call costs stay out of the ratio
        runs = {n: bench_pipeline(Path(folder), n) for n in (1, 4)}
    print(f"\n== tiny pipeline, {args.videos} videos, 8 steps (Prefect flow, real storage and lineage)")
    for n, (wall, stages) in runs.items():
        total = sum(stages.values())
        shares = ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
        print(f"  best-of {n}: wall {wall:.1f} s; qc {stages.get('qc', 0):.1f} s = "
              f"{stages.get('qc', 0) / total:.0%} of stage time ({shares})")
    (w1, s1), (w4, s4) = runs[1], runs[4]
    ratios = {k: s4.get(k, 0) / s1[k] for k in ("synthesis", "qc") if s1.get(k)}
    model = (s4.get("synthesis", 0) + s4.get("qc", 0)) / (s1.get("synthesis", 0) + s1.get("qc", 0))
    print("  best-of 4 / best-of 1 (4 candidates per item in one batch): "
          + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
          + f", synthesis+qc {model:.2f}x, whole run {w4 / w1:.2f}x")


if __name__ == "__main__":
    main()
