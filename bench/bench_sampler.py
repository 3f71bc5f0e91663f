"""Benchmark of the ThinkSound sampler on CPU (and GPU when present).

Prints, for set A's config and for the full ``thinksound`` architecture with random weights:
24-step CFG-5 sampling time at batch 1 and 4, fp32 and bf16; the ratio to a naive sampler that
re-projects the conditions at every step, as the original does; peak RSS; and the peak memory of
loading a full checkpoint compared with the size of its weights.

The full architecture is slow on CPU (about 0.8 TFLOP per step at batch 1), so it times the
preparation and --full-steps single steps (best of) and extrapolates to 24 steps; the output says so.

Usage: .venv/bin/python bench/bench_sampler.py [--threads 2] [--full-steps 1] [--skip-full] [--skip-load]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from thinksound import Generator, sample_euler
from thinksound.sampler import euler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gen_original_like import original_like_velocity  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
SET_A = REFERENCE / "fixtures" / "setA"


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def features_for(gen: Generator, batch: int, duration: float, seed: int = 0) -> dict[str, torch.Tensor]:
    cfg = gen.config
    _, lc, ls = cfg.seq_lengths(duration)
    g = torch.Generator().manual_seed(seed)
    return {
        "metaclip_features": torch.randn(batch, lc, cfg.clip_dim, generator=g),
        "sync_features": torch.randn(batch, ls, cfg.sync_dim, generator=g),
        "metaclip_text_features": torch.randn(batch, 77, cfg.metaclip_text_dim, generator=g),
        "t5_features": torch.randn(batch, 77, cfg.t5_dim, generator=g),
    }


def naive_sample(gen: Generator, noise, feats, *, steps: int, duration: float, precision: str) -> torch.Tensor:
    """What the original does: every step re-projects every condition inside the forward."""
    with torch.no_grad(), gen.autocast(precision):
        return euler(lambda t, x: gen.velocity(x, t, feats, cfg_scale=5.0, duration_sec=duration), noise, steps=steps)


def original_like_sample(gen: Generator, noise, feats, *, steps: int, duration: float, precision: str) -> torch.Tensor:
    """A stand-in for the original: doubled batch before preprocessing, per-stream RoPE, SiLU per adaLN."""
    lengths = gen.config.seq_lengths(duration)
    with torch.no_grad(), gen.autocast(precision):
        return euler(
            lambda t, x: original_like_velocity(gen.dit, x, t, feats, cfg_scale=5.0, lengths=lengths), noise, steps=steps
        )


def best_of(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_small(gen: Generator, label: str, duration: float, repeats: int) -> None:
    for batch in (1, 4):
        for precision in ("fp32", "bf16"):
            feats = features_for(gen, batch, duration)
            n = gen.config.seq_lengths(duration)[0]
            noise = torch.randn(batch, gen.config.latent_dim, n, generator=torch.Generator().manual_seed(1))
            kw = {"steps": 24, "precision": precision}
            ours_fn = partial(sample_euler, gen, noise, feats, cfg_scale=5.0, duration_sec=duration, **kw)
            naive_fn = partial(naive_sample, gen, noise, feats, duration=duration, **kw)
            orig_fn = partial(original_like_sample, gen, noise, feats, duration=duration, **kw)
            times, outs = {}, {}
            for fn in (ours_fn, naive_fn, orig_fn):
                fn()
            for _ in range(repeats):  # interleaved, best of: the host is shared
                for name, fn in (("ours", ours_fn), ("naive", naive_fn), ("orig", orig_fn)):
                    t, outs[name] = best_of(fn, 1)
                    times[name] = min(t, times.get(name, float("inf")))
            diff = max(rel(outs["ours"], outs[k]) for k in ("naive", "orig"))
            print(
                f"{label:>10} {duration:4.1f}s B={batch} {precision}: 24 steps {times['ours']:7.3f} s | "
                f"naive {times['naive']:7.3f} s x{times['naive'] / times['ours']:.2f} | "
                f"original-like {times['orig']:7.3f} s x{times['orig'] / times['ours']:.2f} | max rel diff {diff:.1e}"
            )


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def bench_full(steps_timed: int) -> None:
    t0 = time.perf_counter()
    gen = Generator.from_preset("thinksound", seed=0)
    print(f"full arch: random init in {time.perf_counter() - t0:.1f} s, peak RSS {peak_rss_gb():.2f} GB")
    duration = 9.0
    for batch in (1, 4):
        for precision in ("fp32", "bf16"):
            feats = features_for(gen, batch, duration)
            n = gen.config.seq_lengths(duration)[0]
            noise = torch.randn(batch, 64, n, generator=torch.Generator().manual_seed(1))
            with torch.no_grad(), gen.autocast(precision):
                t0 = time.perf_counter()
                prepared = gen.prepare(feats, batch=batch, latent_len=n, cfg_scale=5.0, duration_sec=duration)
                t_prep = time.perf_counter() - t0
                t = torch.full((batch,), 0.5)
                step = partial(gen.guided_flow, prepared, noise, t)
                naive = partial(gen.velocity, noise, t, feats, cfg_scale=5.0, duration_sec=duration)
                lengths = gen.config.seq_lengths(duration)
                orig = partial(original_like_velocity, gen.dit, noise, t, feats, cfg_scale=5.0, lengths=lengths)
                if batch == 1 and precision == "fp32":
                    step()  # one warm-up for the whole section; big GEMMs need little of it
                t_step, a = best_of(step, steps_timed)
                t_naive, b = best_of(naive, steps_timed)
                t_orig, c = best_of(orig, steps_timed)
            total = t_prep + 24 * t_step
            print(
                f"{'thinksound':>10} 9.0s B={batch} {precision}: 24 steps ~{total:7.1f} s (EXTRAPOLATED from "
                f"best of {steps_timed} timed step(s): prepare {t_prep:.2f} s + 24 x {t_step:.2f} s) | "
                f"per step: naive {t_naive:.2f} s x{t_naive / t_step:.2f}, original-like {t_orig:.2f} s "
                f"x{t_orig / t_step:.2f} | max rel diff {max(rel(a, b), rel(a, c)):.1e} | "
                f"peak RSS {peak_rss_gb():.2f} GB"
            )


# ru_maxrss survives exec on Linux (the child would inherit the parent's peak); VmHWM does not.
LOAD_CHILD = """
import json, sys, time, torch
from thinksound import Generator
def hwm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
base = hwm_kb()
t0 = time.perf_counter()
kw = json.loads(sys.argv[2])
gen = Generator.from_pretrained(sys.argv[1], **kw)
dt = time.perf_counter() - t0
# Memory-mapped checkpoints are only paged in when used: read every weight once before measuring.
total = sum(float(p.sum()) for p in gen.state_dict().values())
peak = hwm_kb()
nbytes = sum(p.numel() * p.element_size() for p in gen.state_dict().values())
print(json.dumps({"base_kb": base, "peak_kb": peak, "weights_bytes": nbytes, "seconds": dt}))
"""


def _load_in_child(directory: str, **kwargs: object) -> dict:
    cmd = [sys.executable, "-c", LOAD_CHILD, directory, json.dumps(kwargs)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_load() -> None:
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        gen = Generator.from_preset("thinksound", seed=0)
        state = gen.state_dict()
        save_file(state, str(Path(tmp) / "model.safetensors"))
        torch.save(state, Path(tmp) / "thinksound_light.ckpt")
        vae = {f"autoencoder.{k}": v for k, v in gen.vae.state_dict().items()}
        torch.save({"state_dict": vae}, Path(tmp) / "vae.ckpt")
        del gen, state, vae
        cases = {
            "safetensors": {"main_filename": "model.safetensors", "vae_filename": None},
            "thinksound_light.ckpt + vae.ckpt (mmap)": {},
        }
        for label, kwargs in cases.items():
            r = _load_in_child(tmp, **kwargs)
            grew = (r["peak_kb"] - r["base_kb"]) * 1024
            print(
                f"load full model from {label}: {r['seconds']:.1f} s; RSS grew {grew / 2**30:.2f} GB "
                f"(after reading every weight) for {r['weights_bytes'] / 2**30:.2f} GB of weights = "
                f"{grew / r['weights_bytes']:.3f}x (limit 1.10x)"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="best-of repeats for set A")
    ap.add_argument("--full-steps", type=int, default=1, help="timed steps per full-architecture case")
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--skip-load", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    if (SET_A / "weights.safetensors").is_file():
        from safetensors.torch import load_file

        gen = Generator.from_original(
            json.loads((SET_A / "model_config_resolved.json").read_text()), load_file(str(SET_A / "weights.safetensors"))
        )
        for duration in (2.0, 9.0):
            bench_small(gen, "set A", duration, args.repeats)
    else:
        print(f"set A fixtures not found under {SET_A}; skipped")
    print(f"peak RSS so far {peak_rss_gb():.2f} GB")
    if not args.skip_full:
        bench_full(args.full_steps)
    if not args.skip_load:
        bench_load()
    if torch.cuda.is_available():
        print("GPU present: run bench/bench_sampler.py on it with --device cuda (not implemented on CPU hosts)")
    else:
        print("no GPU on this host: GPU figures not measured")
    print(f"peak RSS {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
