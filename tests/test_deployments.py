"""deployments.yaml, deployed to a real Prefect server and run by a process worker with --run-once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest
import yaml
from media import make_video

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "thinksound-process"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_UI_ENABLED="false")
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        server.terminate()
        pytest.fail(f"Prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
    client_env = {**env, "PREFECT_API_URL": api, "THINKSOUND_REPO": str(REPO)}
    yield client_env
    server.terminate()
    server.wait(timeout=30)
    log.close()


def _prefect(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run([str(BIN / "prefect"), *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_deployments_file_declares_a_schedule_and_reprocessing():
    spec = yaml.safe_load((REPO / "deployments.yaml").read_text())
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert by_name["nightly-dub"]["entrypoint"] == "flows/dub.py:dub_dataset"
    assert by_name["nightly-dub"]["schedules"][0]["cron"]
    assert by_name["reprocess-failed"]["entrypoint"] == "flows/reprocess.py:reprocess_failed"
    assert {d["work_pool"]["name"] for d in spec["deployments"]} == {POOL}
    # Shipped paused: a worker must not dub the placeholder input at 02:00 before the site sets it.
    assert by_name["nightly-dub"]["schedules"][0]["active"] is False
    roots = by_name["nightly-dub"]["parameters"]["settings"]["input_roots"]
    assert by_name["nightly-dub"]["parameters"]["input"] in roots, "the deployment sets its input roots"


def test_deployment_runs_on_a_process_worker(prefect_server, tmp_path):
    videos = tmp_path / "incoming"
    videos.mkdir()
    make_video(videos / "scene.mp4", duration=1.0, size="32x32")
    workdir = tmp_path / "work"
    env = prefect_server
    _prefect(env, "work-pool", "create", POOL, "--type", "process")
    _prefect(env, "--no-prompt", "deploy", "--prefect-file", "deployments.yaml", "--all")
    schedules = json.loads(_prefect({**env, "COLUMNS": "400"}, "deployment", "schedule", "ls",
                                    "dub_dataset/nightly-dub", "--output", "json"))
    assert [s["active"] for s in schedules] == [False]
    # The deployment's input roots go with its input: a site changes both.
    overrides = {"workdir": str(workdir), "steps": 2, "max_duration_sec": 1.0, "input_roots": [str(videos)]}
    _prefect(env, "deployment", "run", "dub_dataset/nightly-dub", "--param", f"input={videos}",
             "--param", f"overrides={json.dumps(overrides)}")
    _prefect(env, "worker", "start", "--pool", POOL, "--run-once", timeout=600)
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT source, status FROM item_status").fetchall()
        (params,) = con.execute("SELECT params FROM runs").fetchone()
    assert rows == [(str(videos / "scene.mp4"), "succeeded")]
    # The run's overrides are merged field by field: the deployment's other settings are kept.
    deployed = yaml.safe_load((REPO / "deployments.yaml").read_text())["definitions"]["settings"]
    assert json.loads(params)["batch_size"] == deployed["batch_size"] != 8
    assert json.loads(params)["steps"] == 2
    runs = _prefect({**env, "COLUMNS": "400"}, "flow-run", "ls", "--state", "COMPLETED")
    assert "dub_dataset" in runs and "COMPLETED" in runs
