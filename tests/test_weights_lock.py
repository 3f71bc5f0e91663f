"""`thinksound weights fetch|verify|lock` against a folder laid out like a Hugging Face hub cache.

The cache is written here as huggingface_hub writes it (``models--owner--name/blobs``, ``refs/main``,
``snapshots/<commit>/FILE`` linking to the blob) with tiny files whose sha256 the test lock pins.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.weights_cli import app
from tasks.weights_lock import WeightsLock, check_preset, snapshot_dir

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
FILES = {
    "owner/ckpts": {"model.ckpt": b"main weights" * 100, "vae.ckpt": b"vae weights" * 50},
    "owner/encoder": {"config.json": b'{"d_model": 8}', "model.bin": b"encoder" * 30},
}


def _write_hub_cache(root: Path, files: dict[str, dict[str, bytes]]) -> None:
    for repo, contents in files.items():
        base = root / f"models--{repo.replace('/', '--')}"
        (base / "refs").mkdir(parents=True, exist_ok=True)
        (base / "refs" / "main").write_text(COMMIT)
        for name, data in contents.items():
            blob = base / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = base / "snapshots" / COMMIT / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))


def _write_lock(path: Path, *, unpinned: str | None = None) -> Path:
    models = {
        repo.split("/")[1]: {
            "repo": repo,
            "revision": "main",
            "files": [
                {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                if name != unpinned
                else {"name": name, "size": None, "sha256": None}
                for name, data in contents.items()
            ],
        }
        for repo, contents in FILES.items()
    }
    path.write_text(json.dumps({"format": 1, "presets": {"thinksound": list(models)}, "models": models}))
    return path


@pytest.fixture
def hub(tmp_path: Path) -> tuple[Path, Path]:
    cache = tmp_path / "hub"
    _write_hub_cache(cache, FILES)
    return cache, _write_lock(tmp_path / "weights.lock.json")


def _blob(cache: Path, repo: str, name: str) -> Path:
    return (cache / f"models--{repo.replace('/', '--')}" / "snapshots" / COMMIT / name).resolve()


def test_repository_lock_names_the_preset_files() -> None:
    lock = WeightsLock.read()
    files = {(m.repo, f.name) for m in lock.for_preset("thinksound") for f in m.files}
    assert {("liuhuadai/ThinkSound", n) for n in ("thinksound_light.ckpt", "vae.ckpt", "synchformer_state_dict.pth")} <= files
    assert {m.repo for m in lock.for_preset("thinksound")} == {
        "liuhuadai/ThinkSound", "facebook/metaclip-h14-fullcc2.5b", "google/t5-v1_1-xl",
        "laion/larger_clap_general", "MIT/ast-finetuned-audioset-10-10-0.4593",
    }
    assert {m.repo for m in lock.for_preset("qc")} == {
        "liuhuadai/ThinkSound", "laion/larger_clap_general", "MIT/ast-finetuned-audioset-10-10-0.4593",
    }


def test_verify_passes_then_fails_on_corrupted_and_truncated_files(hub) -> None:
    cache, lock = hub
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", str(cache), "--lock", str(lock)])
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("ok") >= 4 and "mismatch" not in ok.output

    blob = _blob(cache, "owner/ckpts", "vae.ckpt")
    data = bytearray(blob.read_bytes())
    data[3] ^= 0xFF
    blob.write_bytes(bytes(data))
    bad = runner.invoke(app, ["verify", str(cache), "--lock", str(lock)])
    assert bad.exit_code == 1
    assert "sha256 mismatch" in bad.output and "1 of 4 files" in bad.output

    _blob(cache, "owner/encoder", "model.bin").write_bytes(b"short")
    worse = runner.invoke(app, ["verify", str(cache), "--lock", str(lock)])
    assert worse.exit_code == 1 and "size mismatch" in worse.output and "2 of 4 files" in worse.output


def test_plain_folder_per_repo_and_unpinned_files(tmp_path: Path) -> None:
    for repo, contents in FILES.items():
        for name, data in contents.items():
            (tmp_path / repo).mkdir(parents=True, exist_ok=True)
            (tmp_path / repo / name).write_bytes(data)
    lock = WeightsLock.read(_write_lock(tmp_path / "lock.json", unpinned="config.json"))
    checks = {c.name: c for c in check_preset(lock, "thinksound", tmp_path)}
    assert checks["config.json"].status == "unpinned" and not checks["config.json"].failed
    assert checks["config.json"].sha256 == hashlib.sha256(FILES["owner/encoder"]["config.json"]).hexdigest()
    assert all(c.status == "ok" for n, c in checks.items() if n != "config.json")
    assert snapshot_dir(lock.models["encoder"], tmp_path) == tmp_path / "owner" / "encoder"


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / ".venv/bin/thinksound"), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True, timeout=120,
    )


def test_fetch_offline_finds_the_hub_cache_and_names_what_is_missing(hub) -> None:
    cache, lock = hub
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = _cli(["weights", "fetch", "--lock", str(lock)], env)
    assert done.returncode == 0, done.stderr
    assert "HF_HUB_OFFLINE is set" in done.stderr and done.stderr.count("present  owner/") == 4

    _blob(cache, "owner/encoder", "model.bin").unlink()
    missing = _cli(["weights", "fetch", "--lock", str(lock)], env)
    assert missing.returncode == 1
    assert "missing  owner/encoder/model.bin (offline" in missing.stderr
    verified = _cli(["weights", "verify", "--lock", str(lock)], env)
    assert verified.returncode == 1 and "missing" in verified.stdout


def test_lock_pins_commit_size_and_sha256_from_hub_metadata(hub, monkeypatch) -> None:
    import huggingface_hub
    from huggingface_hub.hf_api import RepoFile

    from tasks.weights_fetch import lock_from_hub

    cache, lock_path = hub
    pinned = "fedcba9876543210fedcba9876543210fedcba98"

    class Hub:
        """The two calls the lock makes, answering with the hub's own metadata objects."""

        def model_info(self, repo, revision):
            return type("Info", (), {"sha": pinned})()

        def get_paths_info(self, repo, paths, revision):
            assert revision == pinned
            out = []
            for name in paths:
                data = FILES[repo][name]
                lfs = None if name == "config.json" else {
                    "size": len(data), "oid": hashlib.sha256(data).hexdigest(), "pointerSize": 130}
                out.append(RepoFile(path=name, size=len(data), oid="git-sha1", lfs=lfs))
            return out

    monkeypatch.setattr(huggingface_hub, "HfApi", Hub)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, revision: str(_blob(cache, repo, name)))
    blank = WeightsLock.read(_write_lock(lock_path.parent / "blank.json", unpinned="config.json"))
    locked = lock_from_hub(blank)
    locked.write(lock_path.parent / "locked.json")

    again = WeightsLock.read(lock_path.parent / "locked.json")
    assert {m.revision for m in again.models.values()} == {pinned}
    expected = WeightsLock.read(lock_path)
    for key, model in again.models.items():
        assert model.files == expected.models[key].files
