"""Reading torch checkpoints that pickle more than tensors, without ever running pickled code.

A Lightning checkpoint (the published ``vae.ckpt``) carries, beside its ``state_dict``, optimizer
states, loop and callback states and ``hyper_parameters`` that may be OmegaConf containers. Plain
``torch.load(weights_only=True)`` refuses those classes; allowing them would run their code.

Here every global of the pickle that torch's ``weights_only`` unpickler does not already trust is
bound to its own *inert placeholder*: a class whose construction only stores its arguments. The
unpickler can then rebuild the whole object tree, tensors included, while a malicious ``__reduce__``
(``builtins.exec``, ``subprocess.run``, ...) only ever builds a placeholder holding its arguments.
Globals of the modules torch blocks outright (``os``, ``sys``, ``posix``, ``nt``) still fail the load.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch
from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

log = logging.getLogger(__name__)

# torch keeps allowed globals in one process-wide set: loads that add placeholders take turns.
_placeholder_lock = threading.Lock()


class Placeholder:
    """Stands in for an object of an untrusted class: keeps what the pickle passed, runs nothing."""

    pickled_global: str = ""

    def __new__(cls, *args: object, **kwargs: object) -> Placeholder:
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __init__(self, *args: object, **kwargs: object) -> None:
        """Construction through REDUCE passes the pickled arguments here; they were kept by __new__."""

    def __setstate__(self, state: object) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<placeholder for {self.pickled_global}>"


def _placeholder_for(full_path: str) -> type[Placeholder]:
    name = full_path.rsplit(".", 1)[-1] or "Global"
    return type(name, (Placeholder,), {"pickled_global": full_path, "__module__": __name__})


def _load(path: Path, *, mmap: bool) -> object:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def load_untrusted(path: str | Path) -> object:
    """The object a torch checkpoint holds, with untrusted globals replaced by placeholders.

    Memory-mapped where the format allows it. Files in the legacy (pre-zip) format cannot be scanned
    for their globals: they load with plain ``weights_only=True``.
    """
    path = Path(path)
    try:
        unknown = sorted(get_unsafe_globals_in_checkpoint(path))
    except ValueError:  # legacy format: neither scannable nor memory-mappable
        return _load(path, mmap=False)
    if not unknown:
        return _load(path, mmap=True)
    log.info("%s: %d untrusted globals loaded as inert placeholders: %s", path.name, len(unknown), unknown)
    placeholders = [(_placeholder_for(name), name) for name in unknown]
    with _placeholder_lock, safe_globals(placeholders):
        return _load(path, mmap=True)
