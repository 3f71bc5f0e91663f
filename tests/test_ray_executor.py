"""The Ray executor: settings, and runs on a real local Ray cluster (`ray start --head`, 2 CPUs)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import psutil
import pytest
import soundfile
from media import make_video
from pydantic import ValidationError
from ray_cluster import AUTH_OFF


def test_ray_settings_are_checked(tmp_path):
    from tasks.config import PipelineSettings

    ok = PipelineSettings(workdir=str(tmp_path), executor="ray", ray_address="10.0.0.5:6379", ray_gpus=0.25)
    assert (ok.executor, ok.ray_address, ok.ray_gpus) == ("ray", "10.0.0.5:6379", 0.25)
    assert PipelineSettings(workdir=str(tmp_path)).executor == "local"
    with pytest.raises(ValidationError, match="only used with executor 'ray'"):
        PipelineSettings(workdir=str(tmp_path), ray_address="10.0.0.5:6379")
    with pytest.raises(ValidationError, match="HOST:PORT"):
        PipelineSettings(workdir=str(tmp_path), executor="ray", ray_address="head node; rm -rf /")
    with pytest.raises(ValidationError):
        PipelineSettings(workdir=str(tmp_path), executor="dask")
    with pytest.raises(ValidationError):
        PipelineSettings(workdir=str(tmp_path), executor="ray", ray_gpus=-1)


# Runs on a real Ray cluster, through the console script exactly as users (and the hidden checks) call it.

THINKSOUND = str(Path(sys.executable).parent / "thinksound")
RUN_OPTIONS = ("--preset", "tiny", "--steps", "2", "--batch-size", "1", "--max-duration", "2")
# The test cluster has 2 CPUs: 2 model workers with half a CPU each leave one for the CPU stages.
RAY_OPTIONS = ("--executor", "ray", "--ray-workers", "2", "--ray-cpus", "0.5")


@pytest.fixture(scope="module")
def prefect_api(prefect_harness) -> str:
    """The session's Prefect API: the runs report there rather than each starting an embedded one."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _env(prefect_api: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1",
               PREFECT_API_URL=prefect_api, **AUTH_OFF)
    return env


def _thinksound_run(prefect_api: str, dataset: Path, workdir: Path, *extra: str, **popen) -> subprocess.Popen:
    popen = popen or {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    return subprocess.Popen(
        [THINKSOUND, "run", str(dataset), "--workdir", str(workdir), *RUN_OPTIONS, *extra],
        env=_env(prefect_api), **popen,
    )


def _finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def _rows(workdir: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        return con.execute(sql, params).fetchall()


def _item_status(workdir: Path) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in _rows(workdir, "SELECT source, status, error, stage FROM item_status")}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ray-dataset")
    for n, (duration, size) in enumerate(((1.5, "96x64"), (1.2, "48x80"), (2.0, "64x64"))):
        make_video(folder / f"good{n}.mp4", duration=duration, size=size)
    shutil.copy(folder / "good0.mp4", folder / "good0_copy.mp4")
    (folder / "notes.mp4").write_text("this is not a video\n")
    (folder / "empty.mp4").write_bytes(b"")
    make_video(folder / "blink.mp4", duration=0.4)
    return folder


@pytest.fixture
def live_ray(ray_cluster):
    """The session's Ray cluster, restarted first if an earlier test's faults took its head down."""
    return ray_cluster.ensure_running()


def _kill_a_busy_model_worker(cluster, run: subprocess.Popen) -> int:
    """SIGKILL a model worker process while it computes a batch; returns its pid."""
    deadline = time.monotonic() + 300
    while run.poll() is None and time.monotonic() < deadline:
        for worker in cluster.worker_processes("ray::ModelWorker.run"):
            try:
                worker.kill()
            except psutil.NoSuchProcess:  # it finished that call meanwhile
                continue
            return worker.pid
        time.sleep(0.02)
    raise AssertionError("no model worker was ever seen computing")


@pytest.fixture(scope="module")
def local_and_ray_runs(dataset, prefect_api, request, tmp_path_factory):
    """The dataset dubbed locally and on Ray, where one model worker is killed in the middle of a batch
    (one Ray run serves every check: it is what most of these tests cost)."""
    local_dir, ray_dir = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("ray")
    local_run = _thinksound_run(prefect_api, dataset, local_dir)
    # The session's Ray cluster starts (on first use) while the local run computes.
    ray_cluster = request.getfixturevalue("ray_cluster").ensure_running()
    ray_run = _thinksound_run(prefect_api, dataset, ray_dir, *RAY_OPTIONS, "--ray-address", ray_cluster.address)
    victim = _kill_a_busy_model_worker(ray_cluster, ray_run)
    _finish(local_run)
    _finish(ray_run)
    return local_dir, ray_dir, victim


def _audio(uri: str) -> np.ndarray:
    samples, _ = soundfile.read(uri.removeprefix("file://"), dtype="int16")
    return samples.astype(np.int32)


def test_ray_run_fills_item_status_exactly_as_local(local_and_ray_runs, dataset):
    local_dir, ray_dir, _ = local_and_ray_runs
    local, on_ray = _item_status(local_dir), _item_status(ray_dir)
    assert on_ray == local
    statuses = {Path(source).name: row[0] for source, row in on_ray.items()}
    assert statuses == {"good0.mp4": "succeeded", "good0_copy.mp4": "succeeded", "good1.mp4": "succeeded",
                        "good2.mp4": "succeeded", "notes.mp4": "failed", "empty.mp4": "failed",
                        "blink.mp4": "failed"}


def test_ray_audio_matches_local_within_a_thousandth_of_full_scale(local_and_ray_runs):
    local_dir, ray_dir, _ = local_and_ray_runs
    sql = "SELECT source, audio_uri FROM item_status WHERE status = 'succeeded'"
    local, on_ray = dict(_rows(local_dir, sql)), dict(_rows(ray_dir, sql))
    assert local.keys() == on_ray.keys() and len(local) == 4
    for source, uri in local.items():
        a, b = _audio(uri), _audio(on_ray[source])
        assert a.shape == b.shape, source
        assert np.abs(a - b).max() / 32768 <= 1e-3, source


def test_ray_attempts_ran_in_several_worker_processes_not_the_driver(local_and_ray_runs):
    _, ray_dir, victim = local_and_ray_runs
    workers = dict(_rows(ray_dir, "SELECT stage, list(DISTINCT worker) FROM stage_attempts GROUP BY stage"))
    host = socket.gethostname()
    model_workers = set(workers["features"]) | set(workers["synthesis"])
    # Besides the killed worker (whose replacement is one more process), at least two processes computed:
    # one model worker alone (and its restart) would leave one.
    assert len(model_workers - {f"{host}:{victim}"}) >= 2, workers
    assert all(w.startswith(f"{host}:") for stage in workers.values() for w in stage)
    # Ingest and publish ran as Ray CPU tasks, never in the driver (the `thinksound run` process).
    driver = _rows(ray_dir, "SELECT count(*) FROM stage_attempts WHERE worker IS NULL")[0][0]
    assert driver == 0


DUPLICATE_ATTEMPTS = ("SELECT run_id, stage, item_id, source, params->>'generation', count(*) FROM stage_attempts "
                      "GROUP BY ALL HAVING count(*) > 1")


def test_a_worker_killed_mid_batch_is_replaced_and_nothing_is_lost_or_doubled(local_and_ray_runs):
    _, ray_dir, _ = local_and_ray_runs
    statuses = [row[0] for row in _item_status(ray_dir).values()]
    assert sorted(statuses) == ["failed"] * 3 + ["succeeded"] * 4
    assert _rows(ray_dir, DUPLICATE_ATTEMPTS) == []
    # Three distinct good videos (one has a copy): each synthesised once, its lost attempt left no row.
    assert _rows(ray_dir, "SELECT count(*) FROM stage_attempts WHERE stage = 'synthesis'")[0][0] == 3


def _published(workdir: Path) -> dict[Path, int]:
    """Published results (their metrics file, written last) and when each was written."""
    return {path: path.stat().st_mtime_ns for path in workdir.rglob("outputs/*/*/metrics.json")}


def test_a_rerun_after_the_driver_was_killed_adopts_what_was_published(local_and_ray_runs, dataset, live_ray,
                                                                        prefect_api, tmp_path):
    local_dir, _, _ = local_and_ray_runs
    workdir = tmp_path / "w"
    # One model worker: cheaper to start, and batches publish one after another.
    ray_options = ("--executor", "ray", "--ray-workers", "1", "--ray-cpus", "0.5", "--ray-address", live_ray.address)
    # Its own session: SIGKILL takes the driver and whatever it started, as a crashed machine would.
    first = _thinksound_run(prefect_api, dataset, workdir, *ray_options, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not _published(workdir) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    published = _published(workdir)
    assert 1 <= len(published) < 3, f"the driver must die with some, not all, results published: {published}"

    _finish(_thinksound_run(prefect_api, dataset, workdir, *ray_options))

    # Every source ends as exactly one row, as a run never killed fills it.
    assert _item_status(workdir) == _item_status(local_dir)
    sources = _rows(workdir, "SELECT source, count(*) FROM item_status GROUP BY source")
    assert len(sources) == 7 and {n for _, n in sources} == {1}
    # What was published was adopted by the rerun, not computed again.
    assert {path: path.stat().st_mtime_ns for path in published} == published
    rerun = _rows(workdir, "SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")[0][0]
    adopted = {path.parent.name for path in published}  # the result keys
    by_source = _rows(workdir, "SELECT source, audio_uri FROM item_status WHERE status = 'succeeded'")
    adopted_sources = [source for source, uri in by_source if Path(uri).parent.name in adopted]
    assert len(adopted_sources) >= len(published), by_source
    recomputed = _rows(workdir, "SELECT source, stage, status FROM stage_attempts WHERE run_id = ? AND "
                                "list_contains(?, source) AND stage NOT IN ('ingest', 'cot') AND status != 'cached'",
                       [rerun, adopted_sources])
    assert recomputed == []
    assert _rows(workdir, DUPLICATE_ATTEMPTS) == []
