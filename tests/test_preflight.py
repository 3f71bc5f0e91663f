"""Preflight: `run`, `reprocess` and `demo` on the thinksound preset find every model before any item is
touched, or exit 2 with one line per missing part, the fetch command, and nothing recorded."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from media import make_video

from tasks.config import PipelineSettings
from tasks.preflight import WeightsMissing, check, require
from tasks.weights_lock import WeightsLock

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


def _cache_models(cache: Path, keys: list[str]) -> None:
    """The lock's files of these models, as tiny stand-ins in a hub cache at refs/main."""
    lock = WeightsLock.read()
    for key in keys:
        model = lock.models[key]
        base = cache / f"models--{model.repo.replace('/', '--')}"
        (base / "refs").mkdir(parents=True, exist_ok=True)
        (base / "refs" / model.revision).write_text(COMMIT)
        for f in model.files:
            path = base / "snapshots" / COMMIT / f.name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"stand-in " + f.name.encode())


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    make_video(folder / "a.mp4", duration=1.0)
    return folder


def _thinksound(args: list[str], cache: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    env.pop("PREFECT_API_URL", None)
    start = time.monotonic()
    done = subprocess.run(
        [str(ROOT / ".venv/bin/thinksound"), *args], env=env, capture_output=True, text=True, timeout=120
    )
    return done, time.monotonic() - start


def test_run_with_no_weights_exits_2_naming_each_model(tmp_path, videos):
    work = tmp_path / "W"
    done, seconds = _thinksound(["run", str(videos), "--preset", "thinksound", "--workdir", str(work)], tmp_path / "hub")
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert seconds < 60 and len(lines) <= 20, lines
    text = "\n".join(lines)
    for repo in ("liuhuadai/ThinkSound", "facebook/metaclip-h14-fullcc2.5b", "google/t5-v1_1-xl",
                 "laion/larger_clap_general", "MIT/ast-finetuned-audioset-10-10-0.4593"):
        assert repo in text
    assert "thinksound weights fetch" in text and "HF_HUB_OFFLINE" in text and "Traceback" not in text
    assert not (work / "lineage.duckdb").exists(), "no run may be recorded"
    log = (work / "logs" / "preflight.log").read_text()
    assert "looked for" in log and "vae.ckpt" in log


def test_partly_present_names_only_what_is_missing(tmp_path, videos):
    cache = tmp_path / "hub"
    _cache_models(cache, ["thinksound", "metaclip", "clap", "ast_tagger"])
    work = tmp_path / "W"
    done, _ = _thinksound(["run", str(videos), "--preset", "thinksound", "--workdir", str(work)], cache)
    assert done.returncode == 2
    missing = [line for line in done.stderr.splitlines() if line.startswith("missing")]
    assert len(missing) == 1 and "google/t5-v1_1-xl" in missing[0], done.stderr
    assert not (work / "lineage.duckdb").exists()


def test_demo_checks_first(tmp_path):
    args = ["demo", "--port", "1", "--preset", "thinksound", "--workdir", str(tmp_path / "W")]
    done, _ = _thinksound(args, tmp_path / "hub")
    assert done.returncode == 2 and "thinksound weights fetch" in done.stderr and "Traceback" not in done.stderr


def test_reprocess_of_a_thinksound_run_checks_its_models_first(tmp_path, videos):
    from storage import Lineage

    work = tmp_path / "W"
    source = str((videos / "a.mp4").resolve())
    settings = PipelineSettings(workdir=str(work), preset="thinksound")
    with Lineage.open(work / "lineage.duckdb") as lin:
        lin.start_run("run-before", input=str(videos), params=settings.model_dump(mode="json"))
        lin.add_source("run-before", source, item_id=None, position=0)
        lin.set_item_state("run-before", source, status="failed", stage="features", error="OSError: hub unreachable")
        lin.finish_run("run-before", "completed")

    done, seconds = _thinksound(["reprocess", "--workdir", str(work)], tmp_path / "hub")

    assert done.returncode == 2, done.stderr
    assert "thinksound weights fetch" in done.stderr and "google/t5-v1_1-xl" in done.stderr
    # Slower than `run`'s check: the failed run's settings are read in the flow, after Prefect starts.
    assert "Traceback" not in done.stderr and seconds < 180
    with Lineage.open(work / "lineage.duckdb", read_only=True) as lin:
        runs = lin.execute("SELECT run_id, status FROM runs")
        states = lin.execute("SELECT run_id, status FROM item_state")
    assert runs == [{"run_id": "run-before", "status": "completed"}], "the reprocess recorded no run"
    assert [s["run_id"] for s in states] == ["run-before"]


def test_found_models_are_pinned_as_local_paths(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    _cache_models(cache, ["thinksound", "metaclip", "t5", "clap", "ast_tagger"])
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    settings = PipelineSettings(workdir=str(tmp_path), preset="thinksound")
    pinned = require(settings, offline=True)
    snapshot = f"snapshots/{COMMIT}"
    assert pinned.weights.endswith(f"models--liuhuadai--ThinkSound/{snapshot}")
    assert pinned.synchformer_weights.endswith(f"{snapshot}/synchformer_state_dict.pth")
    assert pinned.clip_model.endswith(f"models--facebook--metaclip-h14-fullcc2.5b/{snapshot}")
    assert pinned.t5_model.endswith(f"models--google--t5-v1_1-xl/{snapshot}")
    assert pinned.clap_model.endswith(f"models--laion--larger_clap_general/{snapshot}")
    assert pinned.tagger_model.endswith(f"models--MIT--ast-finetuned-audioset-10-10-0.4593/{snapshot}")
    assert require(pinned, offline=True) == pinned, "a second check (a worker's) keeps the local paths"
    assert require(PipelineSettings(workdir=str(tmp_path)), offline=True).preset == "tiny"


def test_online_asks_the_hub_and_says_when_it_cannot(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    settings = PipelineSettings(workdir=str(tmp_path), preset="thinksound")
    asked = []

    def hub_has_all(repo, names, revision):
        asked.append(repo)
        return set(names)

    reachable = check(settings, offline=False, hub=hub_has_all)
    assert not reachable.missing and len(reachable.notes) == 6 and "google/t5-v1_1-xl" in asked
    assert reachable.settings == settings, "nothing local to pin: the run downloads"

    def unreachable(repo, names, revision):
        raise ConnectionError("Name or service not known")

    with pytest.raises(WeightsMissing) as err:
        require(settings.model_copy(update={"weights": str(tmp_path)}), offline=True)
    assert any("thinksound_light.ckpt, vae.ckpt (no such file)" in line for line in err.value.lines)
    down = check(settings, offline=False, hub=unreachable)
    assert len(down.missing) == 6 and all("cannot be reached" in line for line in down.missing)
    assert not any(line.startswith("offline") for line in down.lines())
    assert "Name or service not known" in "\n".join(down.detail)
