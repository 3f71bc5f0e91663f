"""Measure how far the generator's parity and equivalence errors move with threads and CPU load.

Float32 sums change order with the number of threads and with how the OS schedules them, so the
tests' limits must sit above the whole spread, not above one run's value. This runs the numeric test
files under several thread counts, with and without competing busy processes, records every
`rel_err` each test computes, and prints the worst value per test next to its limit.

    .venv/bin/python tools/tolerance_spread.py [--threads 1 2 4] [--files tests/test_gen_equivalence.py ...]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILES = ["tests/test_gen_equivalence.py", "tests/test_gen_parity.py"]


def _busy(stop: multiprocessing.Event) -> None:
    x = 0
    while not stop.is_set():
        x = (x * 31 + 7) % 1_000_003


def _run(files: list[str], threads: int, out: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               THINKSOUND_REL_ERR_LOG=str(out), PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tools'}")
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "rel_err_recorder", *files],
                   cwd=ROOT, env=env, check=False, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--files", nargs="+", default=DEFAULT_FILES)
    args = parser.parse_args()

    worst: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory() as tmp:
        for loaded in (False, True):
            stop = multiprocessing.Event()
            load = [multiprocessing.Process(target=_busy, args=(stop,)) for _ in range(os.cpu_count() or 2)]
            for proc in load if loaded else []:
                proc.start()
            try:
                for threads in args.threads:
                    out = Path(tmp) / f"{threads}-{loaded}.jsonl"
                    _run(args.files, threads, out)
                    for line in out.read_text().splitlines() if out.exists() else []:
                        rec = json.loads(line)
                        worst[rec["test"]] = max(worst[rec["test"]], rec["rel_err"])
                        print(f"threads={threads} load={loaded} {rec['test']} {rec['rel_err']:.3g}")
            finally:
                stop.set()
                for proc in load if loaded else []:
                    proc.join()
    print("\nworst rel_err per test over all thread counts and loads:")
    for test, value in sorted(worst.items(), key=lambda kv: -kv[1]):
        print(f"{value:10.3g}  {test}")


if __name__ == "__main__":
    main()
