"""Pipeline benchmark on the tiny presets: throughput, time per stage, orchestration overhead, rerun.

    .venv/bin/python bench/bench_pipeline.py --items 50            # CI-sized
    .venv/bin/python bench/bench_pipeline.py --items 500           # by hand (takes a while)
    .venv/bin/python bench/bench_pipeline.py --items 24 --executor ray --skip-baseline
    .venv/bin/python bench/bench_pipeline.py --driver-cost 1000,10000 --items 0

`--executor ray` adds runs on a local Ray with 1 and 2 model workers (items/min, scaling ratio, warm
models, peak RSS of the workers and the driver) and the per-batch scheduling round trip against the
local executor. `--driver-cost` measures the driver's cost per item (bench/driver_cost.py).

Prints items/min for the Prefect flow and for the same stage functions in a plain Python loop (the
baseline, same process), the time per stage, the orchestration + storage overhead (wall time minus the
time spent inside model and FFmpeg calls, as a fraction of wall time), a fully cached rerun, and peak RSS.
Tiny models are random: this measures the pipeline, not audio quality.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-prefect-"))

import imageio_ffmpeg  # noqa: E402

DURATIONS = (1.0, 1.5, 2.0)


class ComputeClock:
    """Time inside model and FFmpeg calls, per label and as wall time during which any of them runs.

    Publishing overlaps the next batch's model stages, so the per-label sums may exceed the wall time;
    the overhead is the wall time during which no model or FFmpeg call is running (`busy`).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.busy = 0.0
        self._active = 0
        self._busy_since = 0.0
        self._lock = threading.Lock()

    def wrap(self, owner: object, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            started = self._enter()
            try:
                return original(*args, **kwargs)
            finally:
                self._leave(label, started)

        setattr(owner, name, timed)

    def _enter(self) -> float:
        now = time.perf_counter()
        with self._lock:
            if self._active == 0:
                self._busy_since = now
            self._active += 1
        return now

    def _leave(self, label: str, started: float) -> None:
        now = time.perf_counter()
        with self._lock:
            self.seconds[label] += now - started
            self._active -= 1
            if self._active == 0:
                self.busy += now - self._busy_since

    def reset(self) -> None:
        with self._lock:
            self.seconds.clear()
            self.busy = 0.0


def instrument(clock: ComputeClock) -> None:
    import tasks.features
    import tasks.ingest
    import tasks.publish
    import tasks.quality
    import tasks.synthesis
    from thinksound.features import FeatureExtractor

    clock.wrap(tasks.ingest, "probe_video", "ffmpeg probe")
    clock.wrap(tasks.features, "decode_clip", "ffmpeg decode")
    clock.wrap(FeatureExtractor, "encode_videos", "video encoders")
    clock.wrap(FeatureExtractor, "encode_texts", "text encoders")
    clock.wrap(tasks.synthesis, "sample_latents", "generator")
    clock.wrap(tasks.publish, "mux_audio", "ffmpeg mux")
    clock.wrap(tasks.quality, "measure_track", "audio QC math")
    clock.wrap(tasks.publish, "write_gained_wav", "audio QC math")


def make_videos(folder: Path, count: int) -> None:
    """Distinct small videos (the comment tag makes every file's bytes, and so its item, unique)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        out = folder / f"clip{n:04d}.mp4"
        if out.exists():
            continue
        duration = DURATIONS[n % len(DURATIONS)]
        subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
             f"testsrc2=size=64x48:rate=25:duration={duration}", "-c:v", "libx264", "-pix_fmt", "yuv420p",
             "-metadata", f"comment=bench-{n}", str(out)],
            check=True, timeout=60,
        )


@contextlib.contextmanager
def plain_loop():
    """Call the stage functions directly (task.fn), without Prefect task runs or artifacts."""
    from prefect.utilities.annotations import quote

    import flows.pipeline as pipeline

    names = ["ingest", "write_cot", "reuse_published", "dub_batch"]
    saved = {name: getattr(pipeline, name) for name in names}
    saved_progress = pipeline.RunProgress

    class NoArtifactProgress:
        def __init__(self, run_id: str, total: int) -> None:
            self.done = 0

        def advance(self, finished: int) -> None:
            self.done += finished

    def plain(fn):
        def call(*args):
            return fn(*(a.unwrap() if isinstance(a, quote) else a for a in args))

        return call

    for name in names:
        setattr(pipeline, name, plain(saved[name].fn))
    pipeline.RunProgress = NoArtifactProgress
    try:
        yield
    finally:
        for name, task in saved.items():
            setattr(pipeline, name, task)
        pipeline.RunProgress = saved_progress


def run_plain(videos: Path, settings) -> tuple[dict[str, float], float]:
    from flows.pipeline import process_items
    from tasks.run_lineage import close_lineage, open_lineage
    from tasks.sources import list_sources

    started = time.perf_counter()
    with plain_loop():
        lin = open_lineage(settings)
        lin.start_run("plain-baseline", input=str(videos), params={}, code_version="bench")
        _, stages = process_items(list_sources(str(videos)), settings, "plain-baseline", lin)
        lin.finish_run("plain-baseline", "completed")
        close_lineage(settings)
    return stages, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument("--driver-cost", default="", help="comma-separated item counts, e.g. 1000,10000")
    args = parser.parse_args()

    from flows.dub import dub_dataset
    from tasks.config import PipelineSettings

    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    videos = root / "videos"
    t0 = time.perf_counter()
    make_videos(videos, args.items)
    print(f"made {args.items} videos in {time.perf_counter() - t0:.1f} s ({videos})")

    def settings(name: str, **overrides) -> PipelineSettings:
        return PipelineSettings(workdir=str(root / name), steps=args.steps, batch_size=args.batch_size, **overrides)

    clock = ComputeClock()
    instrument(clock)

    # One-time costs of a worker process, reported apart: the embedded Prefect API and model loading.
    from prefect.server.api.server import SubprocessASGIServer

    from tasks.handles import process_handles

    started = time.perf_counter()
    SubprocessASGIServer().start()
    api_s = time.perf_counter() - started
    started = time.perf_counter()
    process_handles().generator(settings("warmup"))
    process_handles().extractor(settings("warmup")).load_all()
    models_s = time.perf_counter() - started
    print(f"one-time startup: embedded Prefect API {api_s:.1f} s, tiny models {models_s:.1f} s")

    if args.driver_cost:
        from driver_cost import driver_cost

        print(f"\n== driver cost per item (stand-in stages, real flow, Prefect and lineage), batch {args.batch_size} ==")
        # A process's first flow run pays one-time costs (lazy imports, Prefect's client): reported apart.
        warmup = driver_cost(20, settings("driver-warmup"))
        print(f"warm-up run (20 items, once per process): {warmup['cpu_ms_per_item'] * 20:.0f} ms CPU")
        for n in (int(v) for v in args.driver_cost.split(",")):
            cost = driver_cost(n, settings(f"driver{n}"))
            print(f"N={n}: {cost['cpu_ms_per_item']:.3f} ms CPU/item, {cost['wall_ms_per_item']:.3f} ms wall/item")
    if args.items == 0:
        return

    started = time.perf_counter()
    result = dub_dataset(input=str(videos), settings=settings("flow"))
    flow_wall = time.perf_counter() - started
    compute = dict(clock.seconds)
    overhead = flow_wall - clock.busy
    clock.reset()
    print(f"\n== Prefect flow, N={args.items}, steps={args.steps}, batch={args.batch_size} ==")
    print(f"outcome: {result['counts']}")
    print(f"wall {flow_wall:.1f} s, {args.items / flow_wall * 60:.1f} items/min")
    for stage, seconds in result["stage_seconds"].items():
        print(f"  stage {stage:<10} {seconds:8.2f} s")
    for label, seconds in sorted(compute.items()):
        print(f"  inside {label:<15} {seconds:8.2f} s")
    print(f"orchestration + storage overhead (wall time with no model, FFmpeg or QC call running): "
          f"{overhead:.2f} s = {overhead / flow_wall:.1%} of wall time")

    started = time.perf_counter()
    rerun = dub_dataset(input=str(videos), settings=settings("flow"))
    rerun_wall = time.perf_counter() - started
    print(f"\n== fully cached rerun ==\nwall {rerun_wall:.2f} s = {rerun_wall / flow_wall:.2%} of the first run "
          f"({rerun['cached']} of {args.items} reused)")
    clock.reset()

    if not args.skip_baseline:
        stages, plain_wall = run_plain(videos, settings("plain"))
        plain_overhead = plain_wall - clock.busy
        print("\n== plain Python loop over the same stage functions (baseline) ==")
        print(f"wall {plain_wall:.1f} s, {args.items / plain_wall * 60:.1f} items/min; "
              f"overhead {plain_overhead:.2f} s = {plain_overhead / plain_wall:.1%}")
        print(f"Prefect flow / plain loop wall time: {flow_wall / plain_wall:.3f}")

    if args.executor == "ray":
        from ray_scaling import report

        report(videos, root, args.items, settings)

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {peak_mb:.0f} MB (N={args.items})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
