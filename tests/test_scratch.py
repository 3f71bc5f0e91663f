"""Scratch files of killed runs are removed by the next run; a live run's files never are."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from media import make_video

REPO = Path(__file__).resolve().parents[1]
# A process that claims its scratch under argv[1], leaves a file in it, reports the folder, then waits.
CLAIMER = (
    "import sys\n"
    "from pathlib import Path\n"
    "from tasks.scratch import own_scratch\n"
    "own = own_scratch(Path(sys.argv[1]))\n"
    "(own / 'tmpwork.wav').write_bytes(b'x' * 1000)\n"
    "print(own, flush=True)\n"
    "sys.stdin.read()\n"
)


def _claimer(root: Path) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", CLAIMER, str(root)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=env)
    return process, Path(process.stdout.readline().strip())


def test_a_killed_runs_scratch_goes_and_a_live_ones_stays(tmp_path):
    root = tmp_path / "scratch"
    live, live_dir = _claimer(root)
    killed, killed_dir = _claimer(root)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    legacy = root / "tmpa1b2c3"
    legacy.mkdir()
    (legacy / "x.mp4").write_bytes(b"partial")
    partial = root / "inputs" / "abc" / ".tmp-1234-clip.mp4"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"partial download")
    assert (killed_dir / "tmpwork.wav").is_file()

    following, _ = _claimer(root)  # the next run
    try:
        assert not killed_dir.exists(), "the killed run's scratch is removed"
        assert not legacy.exists(), "a tmp* folder left directly in scratch by an earlier version is removed"
        assert (live_dir / "tmpwork.wav").is_file(), "a live run's scratch is kept"
        assert partial.is_file(), "downloads are kept while another run may be writing them"
    finally:
        for process in (live, following):
            process.stdin.close()
            process.wait(timeout=30)
    assert not live_dir.exists(), "a run that ends removes its own scratch"
    alone, _ = _claimer(root)
    alone.stdin.close()
    alone.wait(timeout=30)
    assert not partial.exists(), "with no other run alive, partial downloads are removed"


@pytest.mark.usefixtures("prefect_harness")
def test_the_next_pipeline_run_removes_leftovers(tmp_path):
    from flows.dub import dub_dataset
    from tasks.config import PipelineSettings

    workdir = tmp_path / "w"
    leftover = workdir / "scratch" / "tmpq8w7e6"
    leftover.mkdir(parents=True)
    (leftover / "item.wav").write_bytes(b"half written")
    dead_lock = workdir / "scratch" / "proc-999999-deadbeef.lock"
    dead_lock.write_bytes(b"")
    (workdir / "scratch" / "proc-999999-deadbeef").mkdir()
    video = make_video(tmp_path / "v.mp4", duration=1.0, size="32x32")

    result = dub_dataset(input=str(video), settings=PipelineSettings(workdir=str(workdir), steps=2))
    assert result["counts"] == {"succeeded": 1}
    assert not leftover.exists()
    assert not dead_lock.exists() and not (workdir / "scratch" / "proc-999999-deadbeef").exists()
