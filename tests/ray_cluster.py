"""A real local Ray cluster for tests: `ray start --head --block` in its own process group.

The head runs in a new session: its GCS and raylet share its process group, and every worker process
(Ray gives each its own process group) stays in its session. `stop` signals the group, then kills
whatever of the session is left; raylet and the GCS may ignore SIGTERM, so SIGKILL follows a grace
period, and `stop` checks that nothing of the session survives.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
READY_LINE = "Ray runtime started"
AUTH_OFF = {"RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RayCluster:
    """One head node on 127.0.0.1 with `num_cpus` CPUs (so that many worker processes run at once)."""

    def __init__(self, *, num_cpus: int = 2, start_timeout_s: float = 180.0) -> None:
        self.num_cpus = num_cpus
        self.start_timeout_s = start_timeout_s
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Unix socket paths must stay short: Ray's session folder goes under a short /tmp path.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        self.log_path = self.temp_dir / "head.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RayCluster:
        # Token auth off: a ~/.ray/auth_token left by any local Ray start would otherwise switch it on
        # for this cluster only. Tests' drivers set the same (`AUTH_OFF`).
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1", **AUTH_OFF}
        self._process = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
             "--port", str(self.port), "--num-cpus", str(self.num_cpus), "--num-gpus", "0",
             "--include-dashboard=false", "--disable-usage-stats", "--object-store-memory", str(200 * 2**20),
             "--temp-dir", str(self.temp_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def ensure_running(self) -> RayCluster:
        """This cluster, started again (same address) if its head process has died."""
        if self._process is not None and self._process.poll() is not None:
            self.stop()
            self.temp_dir.mkdir(parents=True, exist_ok=True)
            self.start()
        return self

    def _wait_ready(self) -> None:
        """Wait until the head says the runtime is up (or exits, or time runs out).

        A thread keeps copying the head's output to `log_path` for its whole life: the head must never
        see its pipe closed (it would die) or full (it would block).
        """
        assert self._process is not None and self._process.stdout is not None
        ready, ended = threading.Event(), threading.Event()
        stream = self._process.stdout

        def copy_output() -> None:
            with self.log_path.open("wb") as log:
                for line in stream:
                    log.write(line)
                    log.flush()
                    if READY_LINE.encode() in line:
                        ready.set()
            ended.set()
            ready.set()

        threading.Thread(target=copy_output, name="ray-head-output", daemon=True).start()
        if not ready.wait(self.start_timeout_s) or ended.is_set():
            tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
            raise RuntimeError(f"Ray head not ready after {self.start_timeout_s:.0f} s (or it exited):\n{tail}")

    def session_processes(self) -> list[psutil.Process]:
        """Every live process of the cluster's session (head, GCS, raylet, agents, workers)."""
        if self._process is None:
            return []
        found = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getsid(proc.pid) == self._process.pid and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue
        return found

    def worker_processes(self, title_prefix: str = "ray::") -> list[psutil.Process]:
        """The cluster's Ray worker processes whose title starts with `title_prefix`."""
        found = []
        for proc in self.session_processes():
            try:
                cmdline = proc.cmdline()
            except psutil.NoSuchProcess:
                continue
            if cmdline and cmdline[0].startswith(title_prefix):
                found.append(proc)
        return found

    def stop(self, grace_s: float = 5.0) -> None:
        if self._process is None:
            return
        group = self._process.pid
        try:
            os.killpg(group, signal.SIGTERM)
            try:
                self._process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._process.wait()
        for proc in self.session_processes():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        left = psutil.wait_procs(self.session_processes(), timeout=grace_s)[1]
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        if left:
            raise RuntimeError(f"Ray processes left after stop: {[p.pid for p in left]}")
        self._process = None
