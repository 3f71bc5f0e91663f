"""`thinksound run --cot-url` against a real vLLM server: the CoT stage's lineage and cache."""

from __future__ import annotations

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


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    return subprocess.run([THINKSOUND, *args], env=env, capture_output=True, text=True, timeout=900)


def test_run_with_cot_url_records_vllm_cots_and_caches_them(vllm_server, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "a.mp4", duration=1.5, size="96x64")
    make_video(videos / "b.mp4", duration=1.0, size="64x96", pattern="testsrc")
    make_video(videos / "c.mp4", duration=1.0, size="64x64")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "video,caption,caption_cot\n"
        f"{videos / 'a.mp4'},,\n"
        f"{videos / 'b.mp4'},,\n"
        f"{videos / 'c.mp4'},rain,Start with steady rain on a roof. Avoid voices and music.\n"
    )
    workdir = tmp_path / "w"
    args = ("run", str(manifest), "--preset", "tiny", "--workdir", str(workdir), "--steps", "2",
            "--cot-url", vllm_server.base_url, "--cot-model", TINY_MODEL_NAME)
    first = _run(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        cot = con.execute(
            "SELECT source, caption_cot, cot_backend, cot_model, prompt_version, t5_tokens FROM item_cot"
        ).fetchall()
        status = dict(con.execute("SELECT source, status FROM item_status").fetchall())
        failed_elsewhere = con.execute(
            "SELECT count(*) FROM item_status WHERE status = 'failed' AND stage <> 'cot'").fetchone()[0]
        raw = con.execute("SELECT count(*) FROM cot WHERE raw_answer IS NOT NULL AND backend = 'vllm'").fetchone()[0]
    by_source = {row[0]: row[1:] for row in cot}
    assert set(by_source) == {str(videos / n) for n in ("a.mp4", "b.mp4", "c.mp4")}
    for name in ("a.mp4", "b.mp4"):
        _, backend, model, prompt_version, t5_tokens = by_source[str(videos / name)]
        assert (backend, model) == ("vllm", TINY_MODEL_NAME)
        assert prompt_version.startswith("v1")
        assert t5_tokens is not None
    written = by_source[str(videos / "c.mp4")]
    assert written[:2] == ("Start with steady rain on a roof. Avoid voices and music.", "provided")
    assert raw == 2
    status.pop(str(videos / "c.mp4"))
    # A random model may fail its CoT (with a reason); nothing may fail after a good CoT.
    assert failed_elsewhere == 0, status

    second = _run(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        latest_run = con.execute("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()[0]
        fresh_cots = con.execute(
            "SELECT count(*) FROM stage_attempts WHERE run_id = ? AND stage = 'cot' AND status = 'succeeded'",
            [latest_run]).fetchone()[0]
    succeeded = sum(1 for s in status.values() if s == "succeeded")
    assert fresh_cots == 2 - succeeded, "finished CoTs must come from the cache on a rerun"


def test_unreachable_cot_server_stops_the_run_with_a_clear_error(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "a.mp4", duration=1.0, size="32x32")
    done = _run("run", str(videos), "--preset", "tiny", "--workdir", str(tmp_path / "w"),
                "--cot-url", "http://127.0.0.1:9/v1", "--cot-model", "nobody")
    assert done.returncode != 0
    assert "error" in done.stderr.lower()


def test_start_cot_server_runs_a_local_vllm_for_the_run(vllm_server, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "a.mp4", duration=1.0, size="64x64")
    workdir = tmp_path / "w"
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [THINKSOUND, "run", str(videos), "--preset", "tiny", "--workdir", str(workdir), "--steps", "2",
         "--start-cot-server", "--cot-model", vllm_server.model],
        env=env, cwd=repo, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT cot_backend, cot_model FROM item_cot").fetchall()
    assert rows == [("vllm", vllm_server.model)]
    log = (workdir / "logs" / "vllm-server.log").read_text()
    assert log.strip(), "the server's output is logged"
