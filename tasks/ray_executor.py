"""The Ray executor: model stages on warm model workers (Ray actors), CPU stages as Ray tasks.

Each model worker is one Ray actor, one process, holding its own `Handles`: its models load on its
first batch and stay warm. It asks Ray for `ray_gpus` GPUs (fractions share a GPU) and `ray_cpus`
CPUs; the CPU stages ask for `ray_cpus`. The driver keeps one batch per model worker in flight.

Faults: a worker process that dies mid-batch is restarted by Ray and the batch is run again (no
lineage was written for the lost attempt: only the driver writes, from returned results). A stage's
own exception is not retried by Ray: it comes back to the driver, whose Prefect task retries only
transient errors. Outputs are content-addressed, so a rerun batch overwrites what the lost attempt
may have half-written.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import resource

import ray

from tasks.config import PipelineSettings
from tasks.executors import Batch, StageFn
from tasks.handles import Handles, process_handles
from tasks.records import StageResult

logger = logging.getLogger(__name__)

# Ray reruns a batch whose worker process died this many times before the run gives up on it.
SYSTEM_RETRIES = 3


class ModelWorker:
    """One warm model worker: runs model stages with the models of its own process."""

    def __init__(self) -> None:
        self.handles = Handles()

    def run(self, fn: StageFn, batch: Batch) -> StageResult:
        return fn(self.handles, batch)

    def stats(self) -> dict[str, float]:
        """This worker's process, the models it has loaded (warm: no more after its first batch), and
        its peak memory."""
        return {
            "pid": os.getpid(),
            "model_loads": self.handles.model_loads,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def _run_cpu_stage(fn: StageFn, batch: Batch) -> StageResult:
    return fn(process_handles(), batch)


class RayExecutor:
    """Joins the cluster at `ray_address`, or starts a local Ray for the run (stopped by `close`)."""

    def __init__(self, settings: PipelineSettings) -> None:
        self.address = settings.ray_address
        if ray.is_initialized():
            raise RuntimeError("Ray is already initialised in this process: one Ray run at a time")
        # Model workers hold their CPUs for the whole run: the CPU stages need some left over.
        needed = settings.ray_workers * settings.ray_cpus + settings.ray_cpus
        local = {} if settings.ray_address else {"num_cpus": max(os.cpu_count() or 1, math.ceil(needed))}
        ray.init(
            address=settings.ray_address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=False,
            **local,
        )
        available = ray.cluster_resources().get("CPU", 0)
        if available < needed:
            ray.shutdown()
            raise RuntimeError(
                f"the Ray cluster has {available:g} CPUs; {settings.ray_workers} model workers with "
                f"{settings.ray_cpus:g} CPUs each, plus the CPU stages, need {needed:g}: lower ray_cpus or "
                "ray_workers, or add nodes"
            )
        worker_class = ray.remote(ModelWorker).options(
            num_cpus=settings.ray_cpus,
            num_gpus=settings.ray_gpus,
            max_restarts=-1,
            max_task_retries=SYSTEM_RETRIES,
        )
        self.workers = [worker_class.remote() for _ in range(settings.ray_workers)]
        self._free: queue.Queue = queue.Queue()
        for worker in self.workers:
            self._free.put(worker)
        self._cpu_stage = ray.remote(_run_cpu_stage).options(num_cpus=settings.ray_cpus, max_retries=SYSTEM_RETRIES)
        # One batch per model worker, plus one whose CPU stages run meanwhile.
        self.parallel_batches = settings.ray_workers + 1

    def run(self, fn: StageFn, batch: Batch, *, models: bool) -> StageResult:
        if not models:
            return ray.get(self._cpu_stage.remote(fn, batch))
        worker = self._free.get()
        try:
            return ray.get(worker.run.remote(fn, batch))
        finally:
            self._free.put(worker)

    def worker_stats(self) -> list[dict[str, float]]:
        """`ModelWorker.stats` of every model worker."""
        return ray.get([w.stats.remote() for w in self.workers])

    def close(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
        ray.shutdown()
