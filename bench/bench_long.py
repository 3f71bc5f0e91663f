"""Long-video benchmark on the tiny presets: time per second of video, peak RSS, share of decoding.

    .venv/bin/python bench/bench_long.py                          # 30 s, 2 min, 10 min at 1080p
    .venv/bin/python bench/bench_long.py --durations 30 120 --size 640x360 --steps 2

Each video is dubbed by `thinksound run DIR --preset tiny` in its own process, so its peak RSS is its
own (os.wait4). The streamed decode of the same windows (`decode_windows`, frames resized to 224 px) is
timed alone to give the share of the run spent decoding. The reference is the shortest video: the
longer ones print their time per second and peak RSS as ratios to it (flat = 1.0). Tiny models are
random: this measures the pipeline, not audio quality.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.cache_keys import generation_duration  # noqa: E402
from thinksound.config import TINY  # noqa: E402
from thinksound.features.stream import decode_windows  # noqa: E402
from thinksound.windows import plan_windows  # noqa: E402


def make_video(path: Path, duration: float, size: str) -> Path:
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={duration}",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


def dub(folder: Path, workdir: Path, steps: int) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one `thinksound run` process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    command = [
        str(Path(sys.executable).with_name("thinksound")), "run", str(folder), "--preset", "tiny",
        "--workdir", str(workdir), "--steps", str(steps), "--max-duration", "600",
    ]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"thinksound run failed for {folder}: {process.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def decode_seconds(video: Path, duration: float) -> float:
    plan = plan_windows(TINY, generation_duration(duration))
    ranges = [(plan.window_range_sec(w.index)[0], plan.window_sec) for w in plan.windows]
    started = time.perf_counter()
    for _ in decode_windows(video, ranges):
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--durations", type=float, nargs="+", default=[30.0, 120.0, 600.0])
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    print(f"tiny presets, {args.size}, {args.steps} steps; reference: the shortest video", flush=True)
    print(f"{'video':>8} {'windows':>7} {'wall s':>8} {'s/s video':>9} {'ratio':>6} {'peak RSS MiB':>12} "
          f"{'ratio':>6} {'decode share':>12}", flush=True)  # fmt: skip
    reference = None
    with tempfile.TemporaryDirectory(prefix="bench-long-") as tmp:
        for duration in sorted(args.durations):
            folder = Path(tmp) / f"in-{duration:g}"
            folder.mkdir()
            video = make_video(folder / "video.mp4", duration, args.size)
            wall, rss = dub(folder, Path(tmp) / f"w-{duration:g}", args.steps)
            decode = decode_seconds(video, duration)
            windows = len(plan_windows(TINY, generation_duration(duration)).windows)
            per_sec = wall / duration
            reference = reference or (per_sec, rss)
            print(
                f"{duration:>7g}s {windows:>7} {wall:>8.1f} {per_sec:>9.3f} {per_sec / reference[0]:>6.2f} "
                f"{rss:>12.0f} {rss / reference[1]:>6.2f} {decode / wall:>12.1%}",
                flush=True,
            )


if __name__ == "__main__":
    main()
