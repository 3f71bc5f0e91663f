"""pytest plugin for tools/tolerance_spread.py: logs every `gen_helpers.rel_err` value per test."""

from __future__ import annotations

import json
import os

import pytest

_current: list[str] = [""]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    _current[0] = item.nodeid
    yield


def pytest_configure(config):
    import gen_helpers

    original = gen_helpers.rel_err
    log_path = os.environ["THINKSOUND_REL_ERR_LOG"]

    def recording(got, ref):
        value = original(got, ref)
        with open(log_path, "a") as log:
            log.write(json.dumps({"test": _current[0], "rel_err": value}) + "\n")
        return value

    gen_helpers.rel_err = recording
    # The test modules import rel_err by name: patch their copies as they are collected.
    config._rel_err_recording = recording


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        module = item.module
        if getattr(module, "rel_err", None) is not None:
            module.rel_err = config._rel_err_recording
