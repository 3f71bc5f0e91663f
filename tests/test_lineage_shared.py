"""A shared lineage: DuckLake on a real PostgreSQL catalog with its data files on real S3 (SeaweedFS).

Concurrent `thinksound run` processes, a plain DuckDB session reading what they wrote, data files on
S3 with no secret stored anywhere, lineage-import, a writer killed mid-commit, PostgreSQL restarts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from media import make_video
from minio.versioningconfig import ENABLED, VersioningConfig
from pg_server import lakes, pg_server  # noqa: F401 - the fixtures are used by name
from s3_server import new_bucket_name, s3_server  # noqa: F401 - the fixture is used by name
from test_deployments import prefect_server  # noqa: F401 - the fixture is used by name

from storage import Lineage, S3Config
from storage.ducklake import load_extensions
from storage.publication_claims import claim_publications, owners_and_liveness
from storage.schema import available_migrations

REPO = Path(__file__).resolve().parents[1]
THINKSOUND = str(Path(sys.executable).with_name("thinksound"))
T0 = 1_700_000_000.0


def _cli_env(s3) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1",
        THINKSOUND_S3_ENDPOINT=s3.endpoint, AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key,
        PYTHONPATH=str(REPO),
    )
    return env


def _reader(catalog: str, data_path: str, s3) -> duckdb.DuckDBPyConnection:
    """A plain DuckDB session, as a user would open one: extensions, an S3 secret, ATTACH."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    load_extensions(con, s3=True)
    con.execute(
        f"CREATE SECRET (TYPE s3, KEY_ID '{s3.access_key}', SECRET '{s3.secret_key}', ENDPOINT '{s3.endpoint}', "
        "USE_SSL false, URL_STYLE 'path', REGION 'us-east-1')"
    )
    con.execute(f"ATTACH '{catalog}' AS lake (DATA_PATH '{data_path}', READ_ONLY)")
    return con


def _versioned_bucket(s3) -> str:
    """A new bucket that keeps every version of an object: a second upload of one key shows."""
    bucket = new_bucket_name()
    s3.client().make_bucket(bucket)
    s3.client().set_bucket_versioning(bucket, VersioningConfig(ENABLED))
    return bucket


def _assert_published_once(con: duckdb.DuckDBPyConnection, s3, bucket: str) -> list[str]:
    """Each result was uploaded once, by at most one recorded publish attempt (a killed run records none)
    and under one claim; returns the result keys."""
    versions = Counter(o.object_name for o in s3.client().list_objects(
        bucket, prefix="out/outputs/", recursive=True, include_version=True))
    assert versions and set(versions.values()) == {1}, f"uploaded more than once: {versions}"
    keys = sorted({name.split("/")[3] for name in versions})
    assert len(versions) == 3 * len(keys), "audio, video and metrics of each result"
    published = dict(con.execute(
        "SELECT input_hash, count(*) FROM lake.stage_attempts WHERE stage = 'publish' AND status = 'succeeded' "
        "GROUP BY ALL").fetchall())
    assert set(published) <= set(keys) and set(published.values()) <= {1}, f"published more than once: {published}"
    claims = con.execute("SELECT result_key, count(*) FROM lake.publication_claims GROUP BY ALL").fetchall()
    assert dict(claims) == dict.fromkeys(keys, 1)
    return keys


def _pg_dump(pg_server, catalog: str) -> str:
    dbname = catalog.split("dbname=")[1].split()[0]
    return pg_server._pg("pg_dump", "-h", "127.0.0.1", "-p", str(pg_server.port), "-U", pg_server.user,
                         dbname).stdout


@pytest.fixture(scope="module")
def overlapping_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """Two folders that share one video's bytes (under another name) and each hold one broken file."""
    root = tmp_path_factory.mktemp("shared-inputs")
    first, second = root / "first", root / "second"
    first.mkdir()
    second.mkdir()
    make_video(first / "a.mp4", duration=1.0, size="32x32")
    make_video(first / "b.mp4", duration=1.2, size="32x32", pattern="smptebars")
    shutil.copy(first / "b.mp4", second / "b_again.mp4")
    make_video(second / "c.mp4", duration=1.1, size="32x32", pattern="rgbtestsrc")
    (first / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    (second / "empty.mp4").write_bytes(b"")
    return first, second


def test_four_concurrent_runs_share_one_lineage(pg_server, s3_server, prefect_server, overlapping_inputs, tmp_path):
    # One Prefect server for the four runs, as a team runs them (rather than an embedded API per run).
    env = {**_cli_env(s3_server), "PREFECT_API_URL": prefect_server["PREFECT_API_URL"],
           "PREFECT_HOME": prefect_server["PREFECT_HOME"]}
    first, second = overlapping_inputs
    bucket = _versioned_bucket(s3_server)
    catalog = f"ducklake:postgres:{pg_server.conninfo(pg_server.create_database())}"
    data_path = f"s3://{bucket}/lineage/"
    inputs = [first, second, first, second]
    started = time.monotonic()
    runs = [
        subprocess.Popen(
            [THINKSOUND, "run", str(folder), "--preset", "tiny", "--workdir", str(tmp_path / f"w{n}"),
             "--store", f"s3://{bucket}/out", "--lineage", catalog, "--lineage-data", data_path,
             "--steps", "2", "--batch-size", "2"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for n, folder in enumerate(inputs)
    ]
    outputs = [run.communicate(timeout=900) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-3000:]
    assert time.monotonic() - started < 900

    sources = {str(p.resolve()) for folder in (first, second) for p in folder.iterdir()}
    with _reader(catalog, data_path, s3_server) as con:
        status = con.execute("SELECT * FROM lake.item_status").fetchall()
        columns = [d[0] for d in con.description]
        by_source = {row[0]: row for row in status}
        assert len(status) == len(by_source) == len(sources), "one row per source"
        assert set(by_source) == sources
        states = {Path(s).name: row[1] for s, row in by_source.items()}
        assert states == {"a.mp4": "succeeded", "b.mp4": "succeeded", "b_again.mp4": "succeeded",
                          "c.mp4": "succeeded", "broken.mp4": "failed", "empty.mp4": "failed"}
        assert all(row[columns.index("error")] for row in status if row[1] == "failed")
        assert con.execute("SELECT count(*) FROM lake.runs WHERE status = 'completed'").fetchone()[0] == 4
        for table, key in (("items", "item_id"), ("artifacts", "item_id, kind"), ("cache", "key"),
                           ("item_state", "run_id, source"), ("run_sources", "run_id, source")):
            duplicated = con.execute(
                f"SELECT {key}, count(*) FROM lake.{table} GROUP BY ALL HAVING count(*) > 1").fetchall()
            assert duplicated == [], f"{table} has duplicated keys: {duplicated}"
        # Each run computes an item at most once, whatever the others do at the same time.
        per_run = con.execute(
            "SELECT run_id, item_id, count(*) FROM lake.stage_attempts WHERE stage = 'synthesis' "
            "AND status = 'succeeded' GROUP BY ALL HAVING count(*) > 1").fetchall()
        assert per_run == []
        # The runs that met a result another run was publishing adopted it, and say whose it is.
        keys = _assert_published_once(con, s3_server, bucket)
        assert len(keys) == 3, "a, b (also b_again) and c"
        publishers = dict(con.execute(
            "SELECT input_hash, run_id FROM lake.stage_attempts WHERE stage = 'publish' AND status = 'succeeded'"
        ).fetchall())
        assert sorted(publishers) == keys, "no run was killed: every publication is recorded"
        adopted = con.execute(
            "SELECT input_hash, json_extract_string(details, '$.published_by') FROM lake.stage_attempts "
            "WHERE stage = 'publish' AND status = 'cached' AND json_extract_string(details, '$.published_by') IS NOT NULL").fetchall()
        assert all(publishers[key] == owner for key, owner in adopted), (adopted, publishers)
        for view in ("item_cot", "failures", "run_summary", "stage_timing"):
            con.execute(f"SELECT * FROM lake.{view}").fetchall()
    with Lineage.open(tmp_path / "file-lineage.duckdb") as file_lineage:
        file_columns = [c["column_name"] for c in file_lineage.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'item_status' "
            "AND table_catalog = current_database() ORDER BY ordinal_position")]
    assert columns == file_columns, "the same columns as the file backend"

    # Secrets stay in the environment: not in the catalog, its data files, or the runs' parameters.
    dump = _pg_dump(pg_server, catalog)
    assert s3_server.secret_key not in dump and s3_server.access_key not in dump
    client = s3_server.client()
    for obj in client.list_objects(bucket, prefix="lineage/", recursive=True):
        body = client.get_object(bucket, obj.object_name).read()
        assert s3_server.secret_key.encode() not in body


def test_data_files_on_s3_and_a_fresh_session_reads_them(pg_server, s3_server, tmp_path):
    bucket = new_bucket_name()
    s3_server.client().make_bucket(bucket)
    catalog = f"ducklake:postgres:{pg_server.conninfo(pg_server.create_database())}"
    data_path = f"s3://{bucket}/team/lineage"
    config = S3Config(endpoint=s3_server.endpoint, access_key=s3_server.access_key, secret_key=s3_server.secret_key)
    with Lineage.open(catalog, data_path=data_path, s3=config) as lin:
        lin.start_run("r1", input="/data", params={"preset": "tiny"}, started_at=T0)
        # More rows than DuckLake inlines in the catalog: they become Parquet files under the data path.
        lin.record_metrics_many("r1", {f"item{n:03d}": {"lufs": -23.0 - n} for n in range(300)})
        lin.finish_run("r1", "completed")
    names = [o.object_name for o in s3_server.client().list_objects(bucket, prefix="team/lineage/", recursive=True)]
    assert any(name.endswith(".parquet") for name in names), names
    with _reader(catalog, data_path + "/", s3_server) as con:
        assert con.execute("SELECT count(*), min(value) FROM lake.metrics").fetchone() == (300, -322.0)
    dump = _pg_dump(pg_server, catalog)
    assert s3_server.secret_key not in dump


_OPENER = """
import sys
from storage import Lineage
with Lineage.open(sys.argv[1], data_path=sys.argv[2]) as lin:
    print(lin.execute("SELECT max(version) AS v FROM schema_migrations")[0]["v"], flush=True)
"""


def test_processes_opening_a_new_lake_at_once_all_migrate_it(pg_server, tmp_path):
    catalog = f"ducklake:postgres:{pg_server.conninfo(pg_server.create_database())}"
    openers = [subprocess.Popen([sys.executable, "-c", _OPENER, catalog, str(tmp_path / "data")], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(opener.wait(timeout=600), *opener.communicate()) for opener in openers]
    for code, _, err in results:
        assert code == 0, err[-3000:]
    latest = str(available_migrations()[-1].version)
    assert [out.strip() for _, out, _ in results] == [latest] * 4
    with Lineage.open(catalog, data_path=str(tmp_path / "data"), read_only=True) as lin:
        versions = [r["version"] for r in lin.execute("SELECT version FROM schema_migrations ORDER BY version")]
    # Schema changes conflict, so each is made once; a data-only migration (nothing to change in a new
    # lake) may be recorded by several of them, which is harmless.
    assert sorted(set(versions)) == [m.version for m in available_migrations()]


def test_two_writers_inserting_one_new_key_conflict_and_the_later_one_updates(lakes):
    """DuckLake would let two MERGEs that both found no row insert the same key twice."""
    catalog = lakes.new()
    first = Lineage.open(catalog, data_path=str(lakes.data_dir))
    second = Lineage.open(catalog, data_path=str(lakes.data_dir))
    try:
        sql = first._backend.insert_sql("cache", ("key", "kind", "uri", "created_at"), 1,
                                        "ON CONFLICT (key) DO UPDATE SET uri = excluded.uri")
        for handle, uri in ((first, "file:///one"), (second, "file:///two")):
            handle._con.begin()
            handle._backend.serialize_upserts()
            handle._con.execute(sql, ["k", "features", uri, "2026-01-01"])
        first._con.commit()
        with pytest.raises(duckdb.TransactionException, match="conflict"):
            second._con.commit()
        second.cache_put("k", "features", "file:///two")  # the retried write finds the row
        assert first.execute("SELECT uri FROM cache WHERE key = 'k'") == [{"uri": "file:///two"}]
    finally:
        first.close()
        second.close()


def test_a_password_in_the_location_is_refused():
    with pytest.raises(ValueError, match="PGPASSWORD"):
        Lineage.open("ducklake:postgres:dbname=x host=127.0.0.1 password=hunter2", data_path="/tmp/x")
    with pytest.raises(ValueError, match="ducklake:postgres"):
        Lineage.open("ducklake:sqlite:x.db", data_path="/tmp/x")


def test_lineage_import_twice_is_the_same(lakes, tmp_path):
    old = tmp_path / "old" / "lineage.duckdb"
    with Lineage.open(old) as lin:
        lin.start_run("r1", input="/data", params={"preset": "tiny"}, started_at=T0)
        lin.add_sources("r1", [dict(source=f"/data/v{n}.mp4", item_id=f"i{n}", position=n) for n in range(3)])
        lin.set_item_states("r1", [dict(source=f"/data/v{n}.mp4", status="succeeded", stage="publish")
                                   for n in range(3)])
        lin.record_attempts([dict(run_id="r1", stage="synthesis", status="succeeded", item_id=f"i{n}",
                                  started_at=T0, finished_at=T0 + 1) for n in range(3)])
        lin.record_cot(run_id="r1", source="/data/v0.mp4", backend="manifest", caption_cot="rain")
        lin.finish_run("r1", "completed", finished_at=T0 + 5)
    catalog = lakes.new()
    env = {**os.environ, "PYTHONPATH": str(REPO), "THINKSOUND_LINEAGE": catalog,
           "THINKSOUND_LINEAGE_DATA": str(lakes.data_dir)}
    counts = []
    for _ in range(2):
        done = subprocess.run([THINKSOUND, "lineage-import", str(old)], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        with Lineage.open(catalog, data_path=str(lakes.data_dir), read_only=True) as lake:
            counts.append({table: lake.execute(f"SELECT count(*) AS n FROM {table}")[0]["n"]
                           for table in ("runs", "run_sources", "item_state", "stage_attempts", "cot")})
            assert [r["status"] for r in lake.item_status()] == ["succeeded"] * 3
    assert counts[0] == counts[1] == {"runs": 1, "run_sources": 3, "item_state": 3, "stage_attempts": 3, "cot": 1}
    summary = subprocess.run([THINKSOUND, "status", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert summary.returncode == 0 and '"n_succeeded": 3' in summary.stdout, summary.stderr[-2000:]


_WRITER = """
import sys, time
from storage import Lineage
catalog, data, batches, reconnect = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
paced = sys.argv[5] == "paced"
with Lineage.open(catalog, data_path=data, reconnect_timeout_s=reconnect) as lin:
    print("open", flush=True)
    for batch in range(batches):
        if paced:
            sys.stdin.readline()
        lin.record_attempts([dict(run_id=f"b{batch}", stage="qc", status="succeeded", item_id=f"i{n}",
                                  started_at=1.7e9, finished_at=1.7e9 + 1) for n in range(600)])
        print(f"batch {batch}", flush=True)
"""


def _writer(catalog: str, data: Path, batches: int, reconnect_s: float, paced: bool = False) -> subprocess.Popen:
    """A process that writes `batches` batches of 600 attempts (each run_id one batch); a paced one
    waits for a line on stdin before each batch."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_WRITER), catalog, str(data), str(batches), str(reconnect_s),
         "paced" if paced else "free"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _expect(writer: subprocess.Popen, line: str) -> None:
    got = writer.stdout.readline().strip()
    if got != line:
        writer.kill()
        raise AssertionError(f"writer said {got!r}, not {line!r}: {writer.stderr.read()[-3000:]}")


def _go(writer: subprocess.Popen, batches: int) -> None:
    writer.stdin.write("go\n" * batches)
    writer.stdin.flush()


def _batches(catalog: str, data: Path) -> dict[str, int]:
    with Lineage.open(catalog, data_path=str(data), read_only=True) as lin:
        rows = lin.execute("SELECT run_id, count(*) AS n FROM stage_attempts GROUP BY run_id")
    return {r["run_id"]: r["n"] for r in rows}


def test_a_writer_killed_mid_commit_leaves_no_partial_batch(lakes):
    catalog = lakes.new()
    writer = _writer(catalog, lakes.data_dir, 50, 60)
    try:
        _expect(writer, "open")
        _expect(writer, "batch 0")
        writer.send_signal(signal.SIGKILL)  # inside a later batch: three 256-row statements, one commit
    finally:
        writer.kill()
        writer.wait(timeout=60)
    batches = _batches(catalog, lakes.data_dir)
    assert batches and set(batches.values()) == {600}, f"every recorded batch is whole: {batches}"


def test_postgres_restart_mid_run_waits_then_fails_clearly(lakes, pg_server):
    catalog = lakes.new()
    writer = _writer(catalog, lakes.data_dir, 6, 120, paced=True)
    try:
        _expect(writer, "open")
        _go(writer, 1)
        _expect(writer, "batch 0")
        pg_server.stop()
        _go(writer, 5)
        time.sleep(2)  # the catalog is away while the writer tries batch 1: it must wait, not fail
        assert writer.poll() is None
        pg_server.start()
        out, err = writer.communicate(timeout=300)
    finally:
        writer.kill()
    assert writer.returncode == 0, err[-3000:]
    assert out.strip().endswith("batch 5")
    assert _batches(catalog, lakes.data_dir) == {f"b{n}": 600 for n in range(6)}, "nothing lost or doubled"

    # Away longer than the writer waits: a clear failure naming the cause, after the bounded wait.
    writer = _writer(catalog, lakes.data_dir, 6, 3, paced=True)
    try:
        _expect(writer, "open")
        pg_server.stop()
        started = time.monotonic()
        out, err = writer.communicate("go\n" * 6, timeout=120)
        waited = time.monotonic() - started
    finally:
        writer.kill()
        pg_server.start()
    assert writer.returncode != 0
    assert "LineageUnavailable" in err and "unreachable for 3s" in err
    assert waited >= 3
    assert _batches(catalog, lakes.data_dir) == {f"b{n}": 600 for n in range(6)}, "finished batches are kept"


_CLAIMER = """
import json, sys
from storage import Lineage
from storage.publication_claims import claim_publications
catalog, data, run_id = sys.argv[1:4]
with Lineage.open(catalog, data_path=data) as lin:
    lin.start_run(run_id, input="/data", params={})
    print("open", flush=True)
    keys = sys.stdin.readline().split()
    print(json.dumps(claim_publications(lin, run_id, keys)), flush=True)
    lin.finish_run(run_id, "completed")
"""


def test_concurrent_claims_give_each_result_one_owner_and_a_stopped_owner_hands_over(lakes):
    catalog = lakes.new()
    claimers = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(_CLAIMER), catalog, str(lakes.data_dir), f"r{n}"],
                                 cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for n in range(3)]
    try:
        for claimer in claimers:
            _expect(claimer, "open")
        keys = [f"result{n:02d}" for n in range(20)]
        # Each claimer asks for the keys in another order, all at once.
        for n, claimer in enumerate(claimers):
            claimer.stdin.write(" ".join(keys[n:] + keys[:n]) + "\n")
            claimer.stdin.flush()
        answers = []
        for claimer in claimers:
            out, err = claimer.communicate(timeout=300)
            assert claimer.returncode == 0, err[-3000:]
            answers.append(json.loads(out))
    finally:
        for claimer in claimers:
            claimer.kill()
    assert answers[0] == answers[1] == answers[2], "every claimer agrees on each key's owner"
    assert set(answers[0]) == set(keys)
    with Lineage.open(catalog, data_path=str(lakes.data_dir)) as lin:
        assert lin.execute("SELECT count(*) AS n, count(DISTINCT result_key) AS keys FROM publication_claims") == [
            {"n": 20, "keys": 20}]
        # The owners have finished (without publishing): a later run takes over only from the owner it names.
        holders = owners_and_liveness(lin, keys)
        assert {owner for owner, live in holders.values() if not live} == set(answers[0].values())
        wrong = claim_publications(lin, "late", keys[:1], take_over={keys[0]: "someone-else"})
        assert wrong == {keys[0]: answers[0][keys[0]]}
        moved = claim_publications(lin, "late", keys, take_over={k: owner for k, (owner, _) in holders.items()})
        assert moved == dict.fromkeys(keys, "late")


def test_a_killed_run_is_abandoned_and_reprocess_finishes_its_work_publishing_once(
    lakes, s3_server, prefect_server, tmp_path
):
    """SIGKILL during publish on a shared lineage; `reprocess` (itself on the shared lineage) finishes it."""
    env = {**_cli_env(s3_server), "PREFECT_API_URL": prefect_server["PREFECT_API_URL"],
           "PREFECT_HOME": prefect_server["PREFECT_HOME"]}
    bucket = _versioned_bucket(s3_server)
    catalog, data = lakes.new(), str(lakes.data_dir)
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "a.mp4", duration=1.0, size="32x32")
    (videos / "broken.mp4").write_bytes(b"")  # fails at ingest, so reprocess always has work
    location = ["--lineage", catalog, "--lineage-data", data]

    def thinksound(*args: str, **extra_env: str) -> subprocess.Popen:
        return subprocess.Popen([THINKSOUND, *args, *location], env={**env, **extra_env}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def lake_rows(sql: str) -> list[dict]:
        with Lineage.open(catalog, data_path=data, read_only=True) as lin:
            return lin.execute(sql)

    killed = thinksound("run", str(videos), "--preset", "tiny", "--workdir", str(tmp_path / "w1"), "--store",
                        f"s3://{bucket}/out", "--steps", "2", THINKSOUND_LINEAGE_LEASE_S="3")
    with Lineage.open(catalog, data_path=data, read_only=True) as watcher:  # each query reads the latest commit
        try:
            # SIGKILL once the run has claimed its result (it is publishing, or about to).
            deadline = time.monotonic() + 600
            while not watcher.execute("SELECT 1 FROM publication_claims"):
                assert killed.poll() is None, killed.communicate()[0][-3000:]
                assert time.monotonic() < deadline, "the run never reached publish"
                time.sleep(0.02)
            os.killpg(killed.pid, signal.SIGKILL)
            killed.wait(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(killed.pid, signal.SIGKILL)
        (killed_id,) = [r["run_id"] for r in watcher.execute("SELECT run_id FROM runs")]
        # Readers see it abandoned once its lease (3 s) has ended, without any writer's help.
        deadline = time.monotonic() + 120
        while (state := watcher.execute("SELECT * FROM run_effective WHERE run_id = ?", [killed_id])[0])[
            "status"
        ] == "running":
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
    assert state["status"] == "abandoned" and "no lease renewal since" in state["status_reason"]
    shown = subprocess.run([THINKSOUND, "status", "--json", *location], env=env, capture_output=True, text=True,
                           timeout=300)
    assert shown.returncode == 0, shown.stderr[-3000:]
    (summary,) = json.loads(shown.stdout)
    assert summary["status"] == "abandoned" and "killed" in summary["status_reason"]

    make_video(videos / "broken.mp4", duration=1.1, size="32x32", pattern="rgbtestsrc")
    following = thinksound("reprocess", "--workdir", str(tmp_path / "w2"))
    out, _ = following.communicate(timeout=600)
    assert following.returncode == 0, out[-3000:]
    runs = {r["run_id"]: r for r in lake_rows("SELECT run_id, status, status_reason FROM runs")}
    assert runs[killed_id]["status"] == "abandoned", "the next writer recorded it"
    assert "no lease renewal since" in runs[killed_id]["status_reason"]
    assert [r["status"] for r in runs.values() if r["run_id"] != killed_id] == ["completed"]
    status = lake_rows("SELECT source, status FROM item_status ORDER BY source")
    assert status == [{"source": str((videos / name).resolve()), "status": "succeeded"}
                      for name in ("a.mp4", "broken.mp4")], "one row per source"
    with _reader(catalog, data, s3_server) as con:
        _assert_published_once(con, s3_server, bucket)


@pytest.mark.usefixtures("prefect_harness")
def test_the_demo_dubs_into_a_shared_lineage_that_a_reader_holds_open(lakes, tmp_path):
    from flows.demo_backend import DemoBackend, GenerationRequest
    from flows.demo_input import UploadLimits
    from tasks.config import PipelineSettings

    catalog, data = lakes.new(), str(lakes.data_dir)
    settings = PipelineSettings(workdir=str(tmp_path / "demo"), preset="tiny", lineage=catalog, lineage_data=data)
    backend = DemoBackend(settings=settings, limits=UploadLimits(max_duration_sec=3.0))
    make_video(tmp_path / "clip.mp4", duration=1.0, size="32x32")
    # A reader holding the lineage open (a lineage file would refuse the demo's writes: LineageLocked).
    with Lineage.open(catalog, data_path=data, read_only=True) as reader:
        assert reader.item_status() == []
        outcome = backend.generate(tmp_path / "clip.mp4", GenerationRequest(steps=2))
        rows = reader.item_status()
        (run,) = reader.run_summary()
    assert outcome.status == "succeeded", outcome.message
    assert outcome.audio_path is not None and outcome.audio_path.is_file()
    assert [(r["status"], r["run_id"]) for r in rows] == [("succeeded", outcome.run_id)], "one row for the upload"
    assert (run["run_id"], run["status"], run["status_reason"]) == (outcome.run_id, "completed", None)
