"""Per-window CoTs from a real vLLM server for a video longer than one window."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from media import make_video
from vllm_server import TINY_MODEL_NAME

pytestmark = pytest.mark.vllm

THINKSOUND = str(Path(sys.executable).with_name("thinksound"))


def test_each_window_gets_its_own_vllm_cot(vllm_server, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "long.mp4", duration=12.0, size="64x48")
    workdir = tmp_path / "w"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    args = [THINKSOUND, "run", str(videos), "--preset", "tiny", "--workdir", str(workdir), "--steps", "2",
            "--cot-url", vllm_server.base_url, "--cot-model", TINY_MODEL_NAME]  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        backend, parsed = con.execute("SELECT backend, parsed FROM cot").fetchone()
        status = con.execute("SELECT status FROM item_status").fetchone()[0]
    assert backend == "vllm" and status == "succeeded"
    windows = json.loads(parsed)["windows"]
    assert len(windows) == 2 and windows[0]["start_sec"] == 0 and windows[1]["end_sec"] == 12.0
    # Each window was described on its own (two requests, two cached answers besides the whole video's).
    assert len(list((workdir / "artifacts" / "cot").glob("*.json"))) == 3
    assert all(w["caption_cot"] for w in windows)
    # A rerun asks the server nothing: every window's CoT is cached.
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "cached" in again.stdout + again.stderr  # the CLI reports on stderr
