"""Lineage benchmark: the file backend (reference) against a DuckLake on a real PostgreSQL catalog.

Measured here (2 cores shared with other jobs, load average ~20, so absolute times are inflated):
100-item run: file 3.3 s (517 rows/s), DuckLake 26.7 s (64 rows/s, 8.1x); 1/2/4 concurrent DuckLake
writers of 100 items each: 43 / 95 / 123 s wall (39 / 36 / 55 rows/s in total); full tiny run of 3
videos: file 90.6 s, DuckLake 97.3 s (+7 %, including migrating the new lake).

    .venv/bin/python bench/bench_lineage.py                 # 500-item lineage, 1/2/4 writers, tiny run
    .venv/bin/python bench/bench_lineage.py --no-run        # lineage writes only (no pipeline run)

Starts its own PostgreSQL (Debian's server, as the tests do) in a temporary directory. Prints, per
backend: rows/s written and the time a 500-item run spends in lineage (the writes a run makes, batched
as the pipeline batches them); for DuckLake, the same with 1, 2 and 4 concurrent writer processes on
one lake; and the wall time of a full tiny `thinksound run` on each backend, as a ratio to the file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pg_server import PostgresServer  # noqa: E402

from storage import Lineage  # noqa: E402

STAGES = ("ingest", "cot", "features", "synthesis", "qc", "publish")


def write_run(lin: Lineage, run_id: str, items: int, batch: int) -> int:
    """The lineage writes of one run over `items` items, in batches as the pipeline makes them; rows written."""
    t0 = time.time()
    rows = 0
    lin.start_run(run_id, input="/bench", params={"preset": "tiny"}, started_at=t0)
    sources = [(f"/bench/{run_id}/clip{n:04d}.mp4", f"{run_id}-item{n:04d}") for n in range(items)]
    lin.add_sources(run_id, [dict(source=s, item_id=i, position=n) for n, (s, i) in enumerate(sources)])
    rows += items + 1
    for start in range(0, items, batch):
        chunk = sources[start : start + batch]
        lin.upsert_items([dict(item_id=i, content_hash=i, start_sec=0.0, duration_sec=1.0, probe={}) for _, i in chunk])
        lin.set_item_states(run_id, [dict(source=s, item_id=i, status="running", stage="ingest") for s, i in chunk])
        lin.record_attempts([dict(run_id=run_id, stage=stage, status="succeeded", item_id=i, source=s,
                                  started_at=t0, finished_at=t0 + 1) for s, i in chunk for stage in STAGES])
        lin.cache_put_many([(f"{stage}:{i}", stage, f"file:///c/{i}") for _, i in chunk for stage in STAGES[2:4]])
        lin.record_artifacts([dict(item_id=i, kind=kind, uri=f"file:///o/{i}.{kind}", key=f"{i}.{kind}", run_id=run_id)
                              for _, i in chunk for kind in ("audio", "video", "metrics")])
        lin.record_metrics_many(run_id, {i: {"lufs": -23.0, "peak": -1.0} for _, i in chunk})
        lin.set_item_states(run_id, [dict(source=s, status="succeeded", stage="publish") for s, _ in chunk])
        rows += len(chunk) * (1 + 1 + len(STAGES) + 2 + 3 + 2 + 1)
    lin.finish_run(run_id, "completed")
    return rows + 1


_WRITER = """
import sys, time, json
sys.path[:0] = sys.argv[5:7]
from bench_lineage import write_run
from storage import Lineage
with Lineage.open(sys.argv[1], data_path=sys.argv[2]) as lin:
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    rows = write_run(lin, sys.argv[3], int(sys.argv[4]), 16)
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}), flush=True)
"""


def concurrent_writers(catalog: str, data: str, writers: int, items: int) -> tuple[float, int]:
    """Wall time and rows of `writers` processes writing one run each at once (after all have opened)."""
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, catalog, data, f"w{writers}-{n}", str(items),
                          str(REPO / "bench"), str(REPO)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for n in range(writers)
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [json.loads(proc.stdout.readline()) for proc in procs]
    wall = time.perf_counter() - started
    for proc in procs:
        proc.wait(timeout=60)
    return wall, sum(r["rows"] for r in results)


def tiny_run(workdir: Path, videos: Path, lineage: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PYTHONPATH=str(REPO))
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).with_name("thinksound")), "run", str(videos), "--preset", "tiny",
                           "--workdir", str(workdir), "--steps", "2", *lineage],
                          env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--videos", type=int, default=4, help="videos in the full tiny run")
    parser.add_argument("--no-run", action="store_true", help="skip the full tiny runs")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-lineage-"))
    # Its own top-level folder: as root, the cluster belongs to the postgres user, who must reach it.
    server = PostgresServer(root=Path(tempfile.mkdtemp(prefix="bench-lineage-pg-")))
    server.init()
    server.start()
    try:
        data = str(root / "lake-data")
        timings: dict[str, tuple[float, int]] = {}
        with Lineage.open(root / "file" / "lineage.duckdb") as lin:
            started = time.perf_counter()
            rows = write_run(lin, "bench", args.items, 16)
            timings["file"] = (time.perf_counter() - started, rows)
        catalog = f"ducklake:postgres:{server.conninfo(server.create_database())}"
        with Lineage.open(catalog, data_path=data) as lin:
            started = time.perf_counter()
            rows = write_run(lin, "bench", args.items, 16)
            timings["ducklake"] = (time.perf_counter() - started, rows)
        print(f"lineage of a {args.items}-item run (batches of 16):")
        for backend, (seconds, rows) in timings.items():
            print(f"  {backend:9s} {seconds:7.2f} s  {rows / seconds:9.0f} rows/s  "
                  f"({seconds / timings['file'][0]:.1f}x file)")
        print(f"concurrent writers on one DuckLake ({args.items} items each):")
        for writers in (1, 2, 4):
            wall, rows = concurrent_writers(catalog, data, writers, args.items)
            print(f"  {writers} writer(s): {wall:7.2f} s wall  {rows / wall:9.0f} rows/s in total")
        if not args.no_run:
            from media import make_video

            videos = root / "videos"
            videos.mkdir()
            for n in range(args.videos):
                make_video(videos / f"clip{n}.mp4", duration=1.0 + 0.2 * n, size="32x32")
            file_s = tiny_run(root / "run-file", videos, [])
            lake = f"ducklake:postgres:{server.conninfo(server.create_database())}"
            lake_s = tiny_run(root / "run-lake", videos, ["--lineage", lake, "--lineage-data", data + "-run"])
            print(f"full tiny run, {args.videos} videos: file {file_s:.1f} s, ducklake {lake_s:.1f} s "
                  f"(overhead {lake_s / file_s - 1:+.0%}; includes migrating the new lake)")
    finally:
        server.stop("immediate")
        shutil.rmtree(server.root, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
