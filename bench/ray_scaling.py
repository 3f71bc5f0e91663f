"""Ray executor figures: throughput with 1 and 2 model workers, scheduling overhead, warm models, memory.

Ray runs locally here (started by the executor for each run). On this 2-core CPU machine the two
workers share the two cores with the CPU stages, so the scaling ratio says how much of the second
worker the machine can use, not what a GPU node would get.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from pathlib import Path

from tasks.executors import Batch, LocalExecutor
from tasks.records import LineageRecords, StageResult


def _noop_stage(handles, batch: Batch) -> StageResult:
    return StageResult(batch.items, LineageRecords(batch.run_id))


def _round_trip_ms(executor, batch: Batch, *, models: bool, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        executor.run(_noop_stage, batch, models=models)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def scheduling_overhead(settings, batch_size: int, repeats: int = 30) -> dict[str, float]:
    """Median round trip of one stage call on a batch of `batch_size` items (no compute), per executor."""
    import ray.cloudpickle

    from tasks.items import WorkItem
    from tasks.ray_executor import RayExecutor

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    items = [WorkItem(source=f"/bench/clip{n}.mp4", position=n, item_id=f"{n:024d}") for n in range(batch_size)]
    batch = Batch("overhead", items, settings)
    local = _round_trip_ms(LocalExecutor(), batch, models=True, repeats=repeats)
    executor = RayExecutor(settings)
    try:
        _round_trip_ms(executor, batch, models=True, repeats=3)  # worker start-up is not scheduling
        _round_trip_ms(executor, batch, models=False, repeats=3)
        model = _round_trip_ms(executor, batch, models=True, repeats=repeats)
        cpu = _round_trip_ms(executor, batch, models=False, repeats=repeats)
    finally:
        executor.close()
    return {"local_ms": local, "ray_model_worker_ms": model, "ray_cpu_task_ms": cpu}


def ray_run(videos: Path, settings) -> dict[str, object]:
    """One `dub` flow run on a local Ray; returns wall time, counts and the model workers' stats."""
    import tasks.ray_executor as ray_executor
    from flows.dub import dub_dataset

    stats: list[dict[str, float]] = []
    close = ray_executor.RayExecutor.close

    def close_with_stats(self) -> None:
        stats.extend(self.worker_stats())
        close(self)

    ray_executor.RayExecutor.close = close_with_stats
    try:
        started = time.perf_counter()
        result = dub_dataset(input=str(videos), settings=settings)
        wall = time.perf_counter() - started
    finally:
        ray_executor.RayExecutor.close = close
    return {"wall_s": wall, "counts": result["counts"], "workers": stats}


def report(videos: Path, root: Path, n_items: int, make_settings) -> None:
    runs = {}
    for workers in (1, 2):
        settings = make_settings(f"ray{workers}", executor="ray", ray_workers=workers, ray_cpus=1.0)
        runs[workers] = ray_run(videos, settings)
        run = runs[workers]
        print(f"\n== Ray executor, {workers} model worker(s), N={n_items} ==")
        print(f"outcome: {run['counts']}; wall {run['wall_s']:.1f} s, {n_items / run['wall_s'] * 60:.1f} items/min")
        for w in run["workers"]:
            print(f"  worker pid {w['pid']}: models loaded {w['model_loads']} (once, then warm), "
                  f"peak RSS {w['peak_rss_mb']:.0f} MB")
    print(f"\nscaling 1 -> 2 workers (items/min ratio): {runs[1]['wall_s'] / runs[2]['wall_s']:.2f}")
    overhead = scheduling_overhead(make_settings("overhead", executor="ray", ray_workers=1, ray_cpus=1.0),
                                   make_settings("x").batch_size)
    print(f"per-batch scheduling round trip (no compute): local {overhead['local_ms']:.2f} ms, "
          f"Ray model worker {overhead['ray_model_worker_ms']:.2f} ms, Ray CPU task {overhead['ray_cpu_task_ms']:.2f} ms")
    print(f"peak RSS of the driver (this process, whole bench): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
