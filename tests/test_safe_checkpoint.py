"""Lightning-shaped checkpoints load without running pickled code: only the state dict is used.

The checkpoints are built here with the published ``vae.ckpt``'s shape: a tiny VAE's weights under
``state_dict`` with the ``autoencoder.`` prefix, optimizer states, an OmegaConf ``DictConfig`` in
``hyper_parameters`` (a look-alike package with OmegaConf's module paths and pickle layout when
OmegaConf is not installed) and payloads whose ``__reduce__`` would write a file.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from thinksound import Generator
from thinksound.loading import read_state_dict
from thinksound.safe_pickle import Placeholder, load_untrusted

# OmegaConf's own pickle layout: __getstate__ gives _metadata (a ContainerMetadata dataclass), _parent and
# _content (nodes); values are AnyNode objects.
_FAKE_OMEGACONF = {
    "__init__.py": "from omegaconf.dictconfig import DictConfig\n",
    "base.py": """
        from dataclasses import dataclass, field
        from typing import Any

        @dataclass
        class ContainerMetadata:
            ref_type: Any = Any
            object_type: Any = dict
            flags: dict = field(default_factory=dict)
    """,
    "nodes.py": """
        class AnyNode:
            def __init__(self, value):
                self._val = value
    """,
    "dictconfig.py": """
        from omegaconf.base import ContainerMetadata
        from omegaconf.nodes import AnyNode

        class DictConfig:
            def __init__(self, content):
                self._metadata = ContainerMetadata()
                self._parent = None
                self._content = {
                    k: DictConfig(v) if isinstance(v, dict) else AnyNode(v) for k, v in content.items()
                }

            def __getstate__(self):
                return {"_metadata": self._metadata, "_parent": self._parent, "_content": self._content}

            def __setstate__(self, state):
                raise AssertionError("a checkpoint loader ran DictConfig code")
    """,
}


@pytest.fixture
def make_dict_config(tmp_path, monkeypatch):
    """OmegaConf.create, or the look-alike's DictConfig, importable for the test's duration only."""
    try:
        from omegaconf import OmegaConf
    except ImportError:
        package = tmp_path / "fake_site" / "omegaconf"
        package.mkdir(parents=True)
        for name, text in _FAKE_OMEGACONF.items():
            (package / name).write_text(textwrap.dedent(text))
        monkeypatch.syspath_prepend(str(package.parent))
        from omegaconf import DictConfig

        yield DictConfig
        for name in [m for m in sys.modules if m == "omegaconf" or m.startswith("omegaconf.")]:
            del sys.modules[name]
    else:
        yield OmegaConf.create


class _WritesFile:
    """A pickle payload: unpickling it calls `func(*args)`, which writes a file."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _exec_payload(marker: Path) -> _WritesFile:
    return _WritesFile(exec, (f"open({str(marker)!r}, 'w').write('pwned')",))


def _subprocess_payload(marker: Path) -> _WritesFile:
    return _WritesFile(subprocess.check_call, ([sys.executable, "-c", f"open({str(marker)!r}, 'w')"],))


@pytest.fixture(scope="module")
def tiny() -> Generator:
    return Generator.from_preset("tiny", seed=5)


def _lightning_checkpoint(vae_state: dict, hyper_parameters, payload) -> dict:
    params = [torch.nn.Parameter(v.clone().float()) for v in list(vae_state.values())[:3]]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    sum(p.sum() for p in params).backward()
    optimizer.step()
    return {
        "epoch": 12,
        "global_step": 3400,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": {f"autoencoder.{k}": v for k, v in vae_state.items()},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [{"base_lrs": [1e-4], "last_epoch": 12}],
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 12}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_path": "", "payload": payload}},
        "hparams_name": "kwargs",
        "hyper_parameters": hyper_parameters,
    }


@pytest.mark.parametrize("make_payload", [_exec_payload, _subprocess_payload], ids=["exec", "subprocess"])
def test_lightning_vae_checkpoint_loads_only_its_weights(tmp_path, make_dict_config, tiny, make_payload):
    marker = tmp_path / "payload-ran"
    payload = make_payload(marker)
    pickle.loads(pickle.dumps(payload))
    assert marker.exists(), "the payload is live: plain unpickling runs it"
    marker.unlink()

    config = make_dict_config({"model": {"latent_dim": 64, "strides": 2}, "lr": 1e-4})
    vae_source = Generator.from_preset("tiny", seed=6)
    torch.save(tiny.state_dict(), tmp_path / "thinksound_light.ckpt")
    torch.save(_lightning_checkpoint(vae_source.vae.state_dict(), config, payload), tmp_path / "vae.ckpt")

    gen = Generator.from_pretrained(tmp_path, config="tiny")

    for k, v in gen.vae.state_dict().items():
        assert torch.equal(v, vae_source.vae.state_dict()[k]), k
    assert not marker.exists(), "pickled code ran while loading"


def test_untrusted_objects_become_inert_placeholders(tmp_path, make_dict_config, tiny):
    marker = tmp_path / "payload-ran"
    config = make_dict_config({"sample_rate": 44100})
    path = tmp_path / "vae.ckpt"
    torch.save(_lightning_checkpoint(tiny.vae.state_dict(), config, _exec_payload(marker)), path)

    loaded = load_untrusted(path)

    hparams = loaded["hyper_parameters"]
    assert isinstance(hparams, Placeholder) and hparams.pickled_global == "omegaconf.dictconfig.DictConfig"
    assert set(hparams.state) == {"_metadata", "_parent", "_content"}
    payload = loaded["callbacks"]["ModelCheckpoint{'monitor': None}"]["payload"]
    assert isinstance(payload, Placeholder) and payload.pickled_global == "builtins.exec"
    assert str(marker) in payload.args[0]
    state = loaded["optimizer_states"][0]["state"][0]
    assert torch.is_tensor(state["exp_avg"]) and int(state["step"]) == 1
    assert not marker.exists()


def test_blocked_module_payload_fails_the_load_without_running(tmp_path):
    import os

    marker = tmp_path / "payload-ran"
    path = tmp_path / "vae.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "x": _WritesFile(os.system, (f"touch {marker}",))}, path)
    with pytest.raises(ValueError, match=r"weights_only=True \(.*GLOBAL (posix|os)\.system .*is blocked\.\)"):
        read_state_dict(path)
    assert not marker.exists()


def test_payload_inside_state_dict_is_refused(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "vae.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2), "evil": _exec_payload(marker)}}, path)
    with pytest.raises(ValueError, match="flat mapping of tensors"):
        read_state_dict(path)
    assert not marker.exists()


def test_plain_state_dict_and_path_objects_read(tmp_path):
    torch.save({"w": torch.arange(3.0)}, tmp_path / "plain.pth")
    assert torch.equal(read_state_dict(tmp_path / "plain.pth")["w"], torch.arange(3.0))
    torch.save({"state_dict": {"w": torch.ones(2)}, "dirpath": Path("/ckpts")}, tmp_path / "with_path.ckpt")
    assert list(read_state_dict(tmp_path / "with_path.ckpt")) == ["w"]
