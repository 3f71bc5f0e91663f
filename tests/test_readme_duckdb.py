"""The README's `duckdb` commands run as written: the DuckDB shell is installed, at DuckDB's version."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import duckdb

from storage import Lineage

REPO = Path(__file__).resolve().parents[1]
DUCKDB = Path(sys.executable).with_name("duckdb")


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return [line.split("  #")[0].strip() for line in text.splitlines() if re.match(r"^duckdb \S", line)]


def test_the_duckdb_shell_matches_the_library_version():
    done = subprocess.run([str(DUCKDB), "-version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0].lstrip("v") == duckdb.__version__


def test_every_readme_duckdb_command_runs(tmp_path):
    commands = _readme_commands()
    assert len(commands) >= 2
    with Lineage.open(tmp_path / "lineage.duckdb") as lin:
        lin.start_run("run-1", input="/data", params={})
        lin.finish_run("run-1", "completed")
    for command in commands:
        args = shlex.split(command)
        # The README's work directories (thinksound-work/, work/) are this test's.
        args = [str(tmp_path / Path(a).name) if a.endswith("lineage.duckdb") else a for a in args]
        done = subprocess.run([str(DUCKDB), *args[1:]], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (command, done.stderr)
