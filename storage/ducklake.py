"""Open a DuckLake lineage: its catalog in PostgreSQL, its data files in a directory or on S3.

The DuckDB extensions come from the pinned `duckdb-extension-*` wheels and load by file path, so
nothing is ever downloaded. S3 credentials go into a temporary (in-memory) DuckDB secret of this
connection only: they are never written to the catalog, the data files or a log.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from storage.s3_store import S3Config, is_s3_uri

PREFIX = "ducklake:postgres:"
_EXTENSION_DIR = Path("extensions") / f"v{duckdb.__version__}"
_PASSWORD = re.compile(r"(^|\s)password\s*=", re.IGNORECASE)


class LineageUnavailable(RuntimeError):
    """The shared lineage's catalog (PostgreSQL) could not be reached within the allowed time."""


def is_ducklake(target: str | Path) -> bool:
    return str(target).startswith("ducklake:")


@dataclass(frozen=True, kw_only=True)
class DuckLakeTarget:
    """A shared lineage: `ducklake:postgres:<libpq conninfo>` plus where its data files go."""

    catalog: str
    data_path: str
    s3: S3Config | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_catalog(self.catalog)
        if not self.data_path:
            raise ValueError("a DuckLake lineage needs a data path (--lineage-data DIR or s3://bucket/prefix/)")
        if is_s3_uri(self.data_path) and self.s3 is None:
            raise ValueError(f"lineage data path {self.data_path} is on S3 but no S3 endpoint is configured")

    @property
    def conninfo(self) -> str:
        return self.catalog[len(PREFIX):]

    @property
    def normalized_data_path(self) -> str:
        """DuckLake joins file names onto DATA_PATH: it must end with a slash."""
        if is_s3_uri(self.data_path):
            return self.data_path.rstrip("/") + "/"
        return str(Path(self.data_path).expanduser().resolve()) + "/"


def check_catalog(catalog: str) -> None:
    """Refuse a lineage location this code cannot open, or one that carries a password."""
    if not catalog.startswith(PREFIX):
        raise ValueError(
            f"shared lineage must be 'ducklake:postgres:<libpq conninfo>', got {catalog.split(' ')[0]!r}..."
        )
    if not catalog[len(PREFIX):].strip():
        raise ValueError("ducklake:postgres: needs a connection string, e.g. 'dbname=lineage host=db user=me'")
    if _PASSWORD.search(catalog[len(PREFIX):]) or "://" in catalog[len(PREFIX):]:
        # The location travels in settings (a flow parameter Prefect stores): no secret may ride along.
        raise ValueError(
            "the lineage connection string must not contain a password (it would be stored with the run's "
            "parameters): use libpq's PGPASSWORD or ~/.pgpass in the worker's environment, and key=value form"
        )


def _wheel_extension(package: str, filename: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(
            f"DuckDB extension package {package} is not installed: pip install "
            f"{package.replace('_', '-')}=={duckdb.__version__}"
        )
    path = Path(spec.origin).parent / _EXTENSION_DIR / filename
    if not path.is_file():
        raise RuntimeError(f"{package} has no {_EXTENSION_DIR / filename}: it must match duckdb {duckdb.__version__}")
    return path


def _postgres_extension() -> Path:
    """The postgres wheel's file under the name of its entry point (`postgres_scanner`), as LOAD needs."""
    source = _wheel_extension("duckdb_extension_postgres", "postgres.duckdb_extension")
    folder = Path(tempfile.gettempdir()) / f"thinksound-duckdb-ext-{duckdb.__version__}"
    folder.mkdir(exist_ok=True)
    link = folder / "postgres_scanner.duckdb_extension"
    if not link.exists() or link.resolve() != source.resolve():
        staging = folder / f".postgres_scanner.{time.monotonic_ns()}"
        staging.symlink_to(source)
        staging.replace(link)  # atomic: concurrent processes never see a half-made link
    return link


def load_extensions(con: duckdb.DuckDBPyConnection, *, s3: bool) -> None:
    con.execute(f"LOAD '{_wheel_extension('duckdb_extension_ducklake', 'ducklake.duckdb_extension')}'")
    con.execute(f"LOAD '{_postgres_extension()}'")
    if s3:
        con.execute(f"LOAD '{_wheel_extension('duckdb_extension_httpfs', 'httpfs.duckdb_extension')}'")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _create_s3_secret(con: duckdb.DuckDBPyConnection, s3: S3Config, *, alias: str, scope: str) -> None:
    # CREATE SECRET takes no prepared parameters; values are quoted literals. The secret is temporary
    # (in memory) and scoped to this lake's data path.
    options = [
        "TYPE s3",
        f"SCOPE {_literal(scope)}",
        f"ENDPOINT {_literal(s3.endpoint)}",
        f"USE_SSL {'true' if s3.secure else 'false'}",
        "URL_STYLE 'path'",
        f"REGION {_literal(s3.region or 'us-east-1')}",
    ]
    if s3.access_key and s3.secret_key:
        options += [f"KEY_ID {_literal(s3.access_key)}", f"SECRET {_literal(s3.secret_key)}"]
    try:
        con.execute(f"CREATE OR REPLACE TEMPORARY SECRET {alias}_s3 ({', '.join(options)})")
    except duckdb.Error:
        raise RuntimeError("could not set up S3 access for the lineage data path (check the endpoint)") from None


def is_connection_error(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, duckdb.Error) and (
        "Unable to connect to Postgres" in text
        or "server closed the connection" in text
        or "connection to server" in text
        or "terminating connection" in text
        or "no connection to the server" in text
        or "Connection refused" in text
    )


def _is_init_race(exc: BaseException) -> bool:
    # Two processes that attach a fresh catalog at once both try to create DuckLake's own tables.
    return "Failed to initialize DuckLake" in str(exc) and "already exists" in str(exc)


_instance: duckdb.DuckDBPyConnection | None = None
_instance_lock = threading.Lock()
_aliases = itertools.count()


def _shared_instance() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB per process that every lake connection is a cursor of.

    Loading the three extensions costs seconds per database instance; sharing one instance pays it
    once per process. Each lake is attached under its own alias, with its own S3 secret.
    """
    global _instance
    with _instance_lock:
        if _instance is None:
            con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
            con.execute("SET enable_progress_bar = false")  # loading takes seconds: no bar on stdout
            load_extensions(con, s3=True)
            _instance = con
        return _instance


def connect(
    target: DuckLakeTarget, *, read_only: bool = False, reconnect_timeout_s: float = 60.0
) -> tuple[duckdb.DuckDBPyConnection, str]:
    """A DuckDB connection with the lake attached as its default catalog, and the catalog's alias."""
    con = _shared_instance().cursor()
    alias = f"lake{next(_aliases)}"
    try:
        con.execute("SET enable_progress_bar = false")  # a slow catalog must not draw bars into logs
        if is_s3_uri(target.data_path):
            assert target.s3 is not None
            _create_s3_secret(con, target.s3, alias=alias, scope=target.normalized_data_path)
        else:
            Path(target.normalized_data_path).mkdir(parents=True, exist_ok=True)
        options = f"DATA_PATH {_literal(target.normalized_data_path)}" + (", READ_ONLY" if read_only else "")
        attach = f"ATTACH {_literal(target.catalog)} AS {alias} ({options})"
        deadline = time.monotonic() + reconnect_timeout_s
        while True:
            try:
                con.execute(attach)
                break
            except duckdb.Error as exc:
                if not (is_connection_error(exc) or _is_init_race(exc)):
                    raise
                if time.monotonic() >= deadline:
                    raise LineageUnavailable(
                        f"shared lineage catalog ({target.conninfo}) unreachable for {reconnect_timeout_s:.0f}s: "
                        f"{_first_line(exc)}"
                    ) from None
                time.sleep(0.2)
        con.execute(f"USE {alias}")
    except BaseException:
        disconnect(con, alias)
        raise
    return con, alias


def disconnect(con: duckdb.DuckDBPyConnection, alias: str) -> None:
    """Detach the lake (and drop its secret) from the shared instance, then close the cursor."""
    try:
        con.execute("USE memory")
        con.execute(f"DETACH DATABASE IF EXISTS {alias}")
        con.execute(f"DROP SECRET IF EXISTS {alias}_s3")
    except duckdb.Error:
        pass  # closing must not fail on a catalog that went away
    finally:
        con.close()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
