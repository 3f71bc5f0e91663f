"""dub_dataset with shards > 1: a real Prefect server, two process workers, one shared DuckLake lineage."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from media import make_video
from pg_server import lakes, pg_server  # noqa: F401 - the fixtures are used by name
from test_deployments import BIN, POOL, REPO, _prefect, prefect_server  # noqa: F401 - fixture used by name

from flows.shards import take_shard
from storage import Lineage
from tasks.items import WorkItem


def test_shards_are_disjoint_and_cover_the_input():
    items = [WorkItem(source=f"/v/{n}.mp4", position=n) for n in range(7)]
    shards = [take_shard(items, k, 3) for k in range(3)]
    assert sorted(i.source for shard in shards for i in shard) == sorted(i.source for i in items)
    assert [len(shard) for shard in shards] == [3, 2, 2]
    with pytest.raises(ValueError):
        take_shard(items, 3, 3)


def test_sharding_needs_a_shared_lineage(tmp_path, prefect_harness):
    from flows.dub import dub_dataset
    from tasks.config import PipelineSettings

    state = dub_dataset(input=str(tmp_path), settings=PipelineSettings(workdir=str(tmp_path / "w")), shards=2,
                        return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="shared lineage"):
        state.result()


@pytest.mark.slow
def test_shard_fan_out_over_two_process_workers(prefect_server, lakes, tmp_path):
    videos = tmp_path / "incoming"
    videos.mkdir()
    for n in range(4):
        make_video(videos / f"clip{n}.mp4", duration=1.0, size="32x32", pattern=("testsrc2", "smptebars")[n % 2])
    catalog = lakes.new()
    env = {**prefect_server, "PYTHONPATH": str(REPO)}
    _prefect(env, "work-pool", "create", POOL, "--type", "process")
    _prefect(env, "--no-prompt", "deploy", "--prefect-file", "deployments.yaml", "--all")
    workers = [
        subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", f"gpu{n}"], env=env,
                         cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for n in range(2)
    ]
    try:
        # The deployment admits inputs from its own folder only (input_roots): this test's folder instead.
        overrides = {"workdir": str(tmp_path / "work"), "steps": 2, "max_duration_sec": 1.0, "batch_size": 1,
                     "input_roots": [str(videos)], "lineage": catalog, "lineage_data": str(lakes.data_dir)}
        out = _prefect(env, "deployment", "run", "dub_dataset/nightly-dub", "--param", f"input={videos}",
                       "--param", f"overrides={json.dumps(overrides)}", "--param", "shards=2",
                       "--watch", "--watch-timeout", "900", timeout=960)
        assert "COMPLETED" in out.upper(), out[-3000:]
    finally:
        for worker in workers:
            os.killpg(worker.pid, 15)
        for worker in workers:
            worker.wait(timeout=60)
    with Lineage.open(catalog, data_path=str(lakes.data_dir), read_only=True) as lin:
        status = {Path(r["source"]).name: r["status"] for r in lin.item_status()}
        runs = lin.run_summary()
        sources_per_run = lin.execute("SELECT run_id, list(source ORDER BY source) AS sources FROM run_sources "
                                      "GROUP BY run_id")
    assert status == {f"clip{n}.mp4": "succeeded" for n in range(4)}
    assert len(runs) == 2 and all(r["status"] == "completed" and r["n_sources"] == 2 for r in runs)
    assert {r["run_id"].rsplit("-", 1)[1] for r in runs} == {"shard1of2", "shard2of2"}
    first, second = (set(r["sources"]) for r in sources_per_run)
    assert not first & second, "shards are disjoint"
