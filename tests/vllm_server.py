"""Test helpers for the CoT stage: a real vLLM CPU server, a tiny random model, clips, and a scripted
OpenAI-compatible endpoint for the transport paths (errors, feedback turns) a real model cannot be
made to produce on demand."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import imageio_ffmpeg

from cot_prompts import VllmServer
from cot_prompts.server import CPU_SERVER_ARGS, CPU_SERVER_ENV

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
TINY_MODEL_NAME = "tiny-random-qwen2-vl"
TEST_SERVER_ARGS = (*CPU_SERVER_ARGS, "--max-num-seqs", "64")
TEST_SERVER_ENV = {**CPU_SERVER_ENV, "TOKENIZERS_PARALLELISM": "false"}


def vllm_env_missing_reason() -> str | None:
    if VLLM_PYTHON.exists():
        return None
    return f"no vLLM environment at {VLLM_PYTHON.parent.parent}: build it with `bash .ci/vllm_env.sh`"


def build_tiny_model(out_dir: Path, *, variant: str = "qwen2_vl", python: Path = VLLM_PYTHON) -> Path:
    """Random weights: whatever it generates is noise, which is all these tests need."""
    subprocess.run(
        [str(python), str(REPO / "tools" / "build_tiny_qwen2vl.py"), str(out_dir), "--variant", variant],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out_dir


def cpu_server(model_dir: Path, *, log_path: Path, media_root: Path, max_model_len: int = 4096) -> VllmServer:
    return VllmServer(
        model=model_dir,
        served_model_name=TINY_MODEL_NAME,
        python=VLLM_PYTHON,
        log_path=log_path,
        extra_args=TEST_SERVER_ARGS,
        env=TEST_SERVER_ENV,
        allowed_local_media_path=media_root,
        max_model_len=max_model_len,
        startup_timeout_s=600,
    )


def free_port_url() -> str:
    """An OpenAI-style base URL on a loopback port where nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def make_clip(path: Path, *, seconds: float = 4.0, size: str = "160x120", rate: int = 10) -> Path:
    """A synthetic H.264 clip (moving test pattern), made with the bundled ffmpeg binary."""
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size={size}:rate={rate}:duration={seconds}",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


def read_metrics(root_url: str) -> dict[str, float]:
    """vLLM's Prometheus gauges and counters, summed over label sets, keyed by metric name."""
    import urllib.request

    with urllib.request.urlopen(f"{root_url}/metrics", timeout=5) as response:
        text = response.read().decode("utf-8")
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(vllm:[a-z_]+)(?:\{[^}]*\})? ([0-9.eE+-]+)$", line)
        if match:
            values[match.group(1)] = values.get(match.group(1), 0.0) + float(match.group(2))
    return values


@dataclass
class MetricsPoller:
    """Samples the server's running/waiting request gauges in a thread while a batch runs."""

    root_url: str
    interval_s: float = 0.02
    running: list[float] = field(default_factory=list)
    in_server: list[float] = field(default_factory=list)

    @contextmanager
    def watching(self) -> Iterator[MetricsPoller]:
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                metrics = read_metrics(self.root_url)
                running = metrics.get("vllm:num_requests_running", 0.0)
                self.running.append(running)
                self.in_server.append(running + metrics.get("vllm:num_requests_waiting", 0.0))
                time.sleep(self.interval_s)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=10)


# --- a scripted OpenAI-compatible endpoint -------------------------------------------------------------

Reply = tuple[int, dict[str, Any]]  # (HTTP status, JSON body)


def completion(content: str | None, finish_reason: str = "stop") -> Reply:
    return 200, {
        "id": "cmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
        ],
    }


def http_error(status: int, message: str = "scripted failure") -> Reply:
    return status, {"error": {"message": message, "type": "server_error", "code": status}}


@dataclass
class ScriptedEndpoint:
    """Answers chat completions from `script(request_body, call_index)`; records every body received."""

    script: Callable[[dict[str, Any], int], Reply]
    model: str = "scripted"
    delay_s: float = 0.0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def serving(self) -> Iterator[str]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.endswith("/models"):
                    self._send(
                        200,
                        {
                            "object": "list",
                            "data": [
                                {"id": endpoint.model, "object": "model", "created": 0, "owned_by": "test"}
                            ],
                        },
                    )
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint._lock:
                    index = len(endpoint.bodies)
                    endpoint.bodies.append(body)
                time.sleep(endpoint.delay_s)
                self._send(*endpoint.script(body, index))

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/v1"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
