"""A real PostgreSQL server for tests: Debian's server binaries, run as a non-root user in a temp dir.

`scripts/setup.sh --test` installs them (apt `postgresql`). `initdb` and `pg_ctl` refuse to run as
root, so as root the cluster belongs to the `postgres` system user; otherwise to the current user.
Use the session fixture `pg_server`, or `PostgresServer` directly for a server a test may restart.
"""

from __future__ import annotations

import getpass
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

_SUPERUSER = "thinksound"


def pg_bin_dir() -> Path | None:
    """The folder of Debian's newest PostgreSQL server binaries, else the one `pg_ctl` is in."""
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if versions:
        return Path(versions[-1]).parent
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


def missing_reason() -> str | None:
    """Why no PostgreSQL test server can run here, or None."""
    if pg_bin_dir() is None:
        return "PostgreSQL server binaries not found: run scripts/setup.sh --test (apt postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to own the test cluster"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One PostgreSQL cluster on 127.0.0.1 with its own data directory, socket directory and port.

    `root` is a new folder the server's user can reach (as root: one directly under /tmp, not inside
    pytest's private tmp_path).
    """

    def __init__(self, *, root: Path, startup_timeout_s: float = 60.0) -> None:
        bin_dir = pg_bin_dir()
        if bin_dir is None:
            raise RuntimeError(missing_reason() or "no PostgreSQL")
        self.bin_dir = bin_dir
        self.root = root
        self.data_dir = root / "data"
        self.socket_dir = root / "sock"
        self.log_path = root / "postgres.log"
        self.startup_timeout_s = startup_timeout_s
        self.port = _free_port()
        self.user = _SUPERUSER
        self._run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self._owner = "postgres" if os.geteuid() == 0 else getpass.getuser()

    def _pg(self, tool: str, *args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess:
        command = [*self._run_as, str(self.bin_dir / tool), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip()} {self.log_tail()}")
        return result

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._run_as:
            shutil.chown(self.root, user=self._owner)
            shutil.chown(self.socket_dir, user=self._owner)
        # Trust on loopback only: the cluster lives for one test session and listens on 127.0.0.1.
        self._pg("initdb", "-D", str(self.data_dir), "-U", self.user, "--auth=trust", "-E", "UTF8",
                 "--no-sync", "--no-instructions")

    def start(self) -> None:
        self._pg(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w",
            "-t", str(int(self.startup_timeout_s)),
            "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync=off "
                  "-c max_connections=200",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast` disconnects clients; `immediate` is a crash-like stop)."""
        if (self.data_dir / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, name: str | None = None) -> str:
        name = name or f"lake_{uuid.uuid4().hex[:12]}"
        self._pg("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name)
        return name

    def conninfo(self, dbname: str) -> str:
        """A libpq key/value connection string for one database (no password: trust on loopback)."""
        return f"dbname={dbname} host=127.0.0.1 port={self.port} user={self.user}"

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server shared by the whole session; stopped and its data removed at the end."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="thinksound-pg-"))
    server = PostgresServer(root=root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


class LakeFactory:
    """Fresh DuckLake lineages on one PostgreSQL server, each in its own database.

    Migrating an empty DuckLake takes seconds (many catalog round trips), so the first lake is
    migrated once and copied (`createdb -T`); copies share the data directory the catalog records.
    """

    def __init__(self, server: PostgresServer, data_dir: Path) -> None:
        self.server = server
        self.data_dir = data_dir
        self._template: str | None = None

    def _ensure_template(self) -> str:
        if self._template is None:
            from storage import Lineage

            name = self.server.create_database()
            Lineage.open(f"ducklake:postgres:{self.server.conninfo(name)}", data_path=str(self.data_dir)).close()
            self._template = name
        return self._template

    def new(self) -> str:
        """The `ducklake:postgres:...` location of a new, migrated, empty lineage."""
        template = self._ensure_template()
        name = f"lake_{uuid.uuid4().hex[:12]}"
        self.server._pg("createdb", "-h", "127.0.0.1", "-p", str(self.server.port), "-U", self.server.user,
                        "-T", template, name)
        return f"ducklake:postgres:{self.server.conninfo(name)}"


@pytest.fixture(scope="session")
def lakes(pg_server):
    data_dir = Path(tempfile.mkdtemp(prefix="thinksound-lake-data-"))
    try:
        yield LakeFactory(pg_server, data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
