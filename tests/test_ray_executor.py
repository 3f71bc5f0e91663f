"""The Ray executor: settings, and runs on a real local Ray cluster (`ray start --head`, 2 CPUs)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError


def test_ray_settings_are_checked(tmp_path):
    from tasks.config import PipelineSettings

    ok = PipelineSettings(workdir=str(tmp_path), executor="ray", ray_address="10.0.0.5:6379", ray_gpus=0.25)
    assert (ok.executor, ok.ray_address, ok.ray_gpus) == ("ray", "10.0.0.5:6379", 0.25)
    assert PipelineSettings(workdir=str(tmp_path)).executor == "local"
    with pytest.raises(ValidationError, match="only used with executor 'ray'"):
        PipelineSettings(workdir=str(tmp_path), ray_address="10.0.0.5:6379")
    with pytest.raises(ValidationError, match="HOST:PORT"):
        PipelineSettings(workdir=str(tmp_path), executor="ray", ray_address="head node; rm -rf /")
    with pytest.raises(ValidationError):
        PipelineSettings(workdir=str(tmp_path), executor="dask")
    with pytest.raises(ValidationError):
        PipelineSettings(workdir=str(tmp_path), executor="ray", ray_gpus=-1)
