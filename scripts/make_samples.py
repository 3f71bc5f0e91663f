"""Make a few short sample videos with FFmpeg, to try the pipeline without a dataset.

Usage: python scripts/make_samples.py DIR
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg

SAMPLES = [
    ("bouncing_ball.mp4", "testsrc2=size=320x240:rate=25:duration=3", ["-c:v", "libx264", "-pix_fmt", "yuv420p"]),
    ("color_bars.mkv", "smptebars=size=256x144:rate=30:duration=2.5", ["-c:v", "libx264", "-pix_fmt", "yuv420p"]),
    ("mandelbrot.webm", "mandelbrot=size=192x192:rate=24", ["-t", "2", "-c:v", "libvpx-vp9", "-b:v", "200k"]),
    ("portrait_life.mov", "life=size=120x200:rate=20:mold=10", ["-t", "2", "-c:v", "mpeg4"]),
]


def main(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name, source, codec_args in SAMPLES:
        out = target / name
        if out.exists():
            continue
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                   "-i", source, *codec_args, str(out)]
        subprocess.run(command, check=True, timeout=300)
    print(f"{len(SAMPLES)} sample videos in {target}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
