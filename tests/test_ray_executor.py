"""The Ray executor: settings, and runs on a real local Ray cluster (`ray start --head`, 2 CPUs)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
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


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", **AUTH_OFF)
    return env


def _thinksound_run(dataset: Path, workdir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [THINKSOUND, "run", str(dataset), "--workdir", str(workdir), *RUN_OPTIONS, *extra],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def _rows(workdir: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


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


@pytest.fixture(scope="module")
def local_and_ray_runs(dataset, ray_cluster, tmp_path_factory):
    local_dir, ray_dir = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("ray")
    ray_run = _thinksound_run(dataset, ray_dir, *RAY_OPTIONS, "--ray-address", ray_cluster.address)
    local_run = _thinksound_run(dataset, local_dir)
    _finish(local_run)
    _finish(ray_run)
    return local_dir, ray_dir


def _audio(uri: str) -> np.ndarray:
    samples, _ = soundfile.read(uri.removeprefix("file://"), dtype="int16")
    return samples.astype(np.int32)


def test_ray_run_fills_item_status_exactly_as_local(local_and_ray_runs, dataset):
    local_dir, ray_dir = local_and_ray_runs
    local, on_ray = _item_status(local_dir), _item_status(ray_dir)
    assert on_ray == local
    statuses = {Path(source).name: row[0] for source, row in on_ray.items()}
    assert statuses == {"good0.mp4": "succeeded", "good0_copy.mp4": "succeeded", "good1.mp4": "succeeded",
                        "good2.mp4": "succeeded", "notes.mp4": "failed", "empty.mp4": "failed",
                        "blink.mp4": "failed"}


def test_ray_audio_matches_local_within_a_thousandth_of_full_scale(local_and_ray_runs):
    local_dir, ray_dir = local_and_ray_runs
    sql = "SELECT source, audio_uri FROM item_status WHERE status = 'succeeded'"
    local, on_ray = dict(_rows(local_dir, sql)), dict(_rows(ray_dir, sql))
    assert local.keys() == on_ray.keys() and len(local) == 4
    for source, uri in local.items():
        a, b = _audio(uri), _audio(on_ray[source])
        assert a.shape == b.shape, source
        assert np.abs(a - b).max() / 32768 <= 1e-3, source


def test_ray_attempts_ran_in_several_worker_processes_not_the_driver(local_and_ray_runs):
    _, ray_dir = local_and_ray_runs
    workers = dict(_rows(ray_dir, "SELECT stage, list(DISTINCT worker) FROM stage_attempts GROUP BY stage"))
    host = socket.gethostname()
    model_workers = set(workers["features"]) | set(workers["synthesis"])
    assert len(model_workers) >= 2, workers
    assert all(w.startswith(f"{host}:") for stage in workers.values() for w in stage)
    # Ingest and publish ran as Ray CPU tasks, never in the driver (the `thinksound run` process).
    driver = _rows(ray_dir, "SELECT count(*) FROM stage_attempts WHERE worker IS NULL")[0][0]
    assert driver == 0


def test_a_worker_killed_mid_batch_is_replaced_and_nothing_is_lost_or_doubled(ray_cluster, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(6):
        make_video(folder / f"clip{n}.mp4", duration=1.0 + 0.1 * n)
    workdir = tmp_path / "w"
    run = _thinksound_run(folder, workdir, *RAY_OPTIONS, "--ray-address", ray_cluster.address)
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and run.poll() is None and time.monotonic() < deadline:
        busy = ray_cluster.worker_processes("ray::ModelWorker.run")
        if busy:
            victim = busy[0]
            victim.kill()
        else:
            time.sleep(0.02)
    assert victim is not None, "no model worker was ever seen computing"
    _finish(run)
    status = _item_status(workdir)
    assert len(status) == 6 and {row[0] for row in status.values()} == {"succeeded"}
    duplicates = _rows(workdir, "SELECT stage, item_id, count(*) FROM stage_attempts "
                                "GROUP BY stage, item_id, params->>'generation' HAVING count(*) > 1")
    assert duplicates == []
    assert _rows(workdir, "SELECT count(*) FROM stage_attempts WHERE stage = 'synthesis'")[0][0] == 6
