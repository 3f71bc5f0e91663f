"""The CoT model server of a run: a local vLLM started for it when asked, and the error that stops the
run when no server can be started or reached."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from cot_prompts import CotError, VllmServer
from cot_prompts.server import CPU_SERVER_ARGS, CPU_SERVER_ENV
from tasks.config import PipelineSettings

__all__ = ["CotError", "cot_server"]


@contextlib.contextmanager
def cot_server(settings: PipelineSettings) -> Iterator[PipelineSettings]:
    """Start a local vLLM server for this run when asked to and no URL was given."""
    if settings.cot.url or not settings.cot.start_server:
        yield settings
        return
    log = settings.workdir_path / "logs" / "vllm-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    on_cpu = settings.device == "cpu"
    with VllmServer(
        model=settings.cot.model,
        python=Path(settings.cot.server_python),
        log_path=log,
        extra_args=CPU_SERVER_ARGS if on_cpu else (),
        env=CPU_SERVER_ENV if on_cpu else None,
    ) as server:
        cot = settings.cot.model_copy(update={"url": server.base_url})
        yield settings.model_copy(update={"cot": cot})
