"""The worker image is built (base from Debian packages, then the Dockerfile) and smoke-run with buildah.

`scripts/container.sh smoke` checks that the image holds this checkout's code, dubs generated videos
inside the image on the tiny preset as the image's non-root user and checks the run's lineage file from
outside. Needs root, buildah and debootstrap (`scripts/setup.sh --test` installs them); CI runs it.
The first build on a machine takes minutes (the dependency layer, from the wheelhouse setup.sh filled);
later builds reuse that layer from the layer cache until pyproject.toml or setup.sh change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.container,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not (shutil.which("buildah") and shutil.which("debootstrap")),
        reason="needs root with buildah and debootstrap (scripts/setup.sh --test installs them)",
    ),
]


def _container(command: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts/container.sh"), command],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )


def test_image_builds_then_dubs_videos_as_non_root():
    build = _container("build", timeout=1800)
    assert build.returncode == 0, build.stderr[-4000:]
    assert "built thinksound-worker:latest in" in build.stderr
    print(build.stderr.strip().splitlines()[-1])

    smoke = _container("smoke", timeout=900)
    assert smoke.returncode == 0, smoke.stderr[-4000:]
    assert "lineage: 1 completed run, 4 items succeeded" in smoke.stdout
    assert "smoke ok: 4 videos dubbed inside thinksound-worker:latest as uid 10001" in smoke.stderr
    print(smoke.stderr.strip().splitlines()[-1])
