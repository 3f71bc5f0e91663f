"""Pipeline settings: the one typed, validated place where every knob of a dubbing run lives."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from storage.ducklake import check_catalog

Precision = Literal["fp32", "bf16", "fp16"]
# How the windows of a video longer than the generator's native length are joined (thinksound/windows.py).
JoinMode = Literal["multidiffusion", "crossfade"]
# Where the stages compute: in this process, or on a Ray cluster (the flow stays in this process).
Executor = Literal["local", "ray"]
# A running cluster's GCS address (`ray start --head` prints it), a Ray Client URI, or "auto".
_RAY_ADDRESS = re.compile(r"^(auto|(ray://)?[A-Za-z0-9.\-]+:\d{1,5})$")

# Synchformer needs one 16-frame window at 25 fps to say anything about the video.
MIN_CONDITIONING_SEC = 16 / 25


class QualitySettings(BaseModel):
    """Thresholds of the per-item audio checks and the loudness target."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    duration_tolerance_sec: float = Field(0.05, ge=0)
    max_clipping_ratio: float = Field(0.01, ge=0, le=1)
    clipping_level: float = Field(0.999, gt=0, le=1)
    max_silence_ratio: float = Field(0.8, ge=0, le=1)
    silence_threshold_dbfs: float = -60.0
    min_loudness_lufs: float = -50.0
    max_true_peak_dbtp: float = -1.0
    loudness_target_lufs: float = -23.0
    max_regenerations: int = Field(0, ge=0, le=10)
    # Level jump across a window seam (short-term RMS just before vs just after its fade).
    max_seam_jump_db: float = Field(12.0, gt=0)
    # Listening checks (thinksound.qc): candidates drawn per item and per generation, then the gates.
    best_of: int = Field(1, ge=1, le=16)
    listen: bool = True
    max_speech_prob: float = Field(0.5, ge=0, le=1)
    max_music_prob: float = Field(0.5, ge=0, le=1)
    max_desync_sec: float | None = Field(None, ge=0)
    min_clap: float | None = Field(None, ge=-1, le=1)
    # Word stems in the caption or CoT that ask for a class and so lift its unwanted-sound gate.
    speech_words: tuple[str, ...] = (
        "talk", "speech", "speak", "spoke", "voice", "vocal", "say", "said", "conversation", "dialog",
        "narrat", "whisper", "shout", "yell", "chant", "sing", "sang", "rap", "announc", "laugh",
    )
    music_words: tuple[str, ...] = (
        "music", "song", "sing", "sang", "melod", "instrument", "guitar", "piano", "violin", "drum", "band",
        "orchestra", "tune", "hum", "choir", "concert", "rap", "beat",
    )


class CotSettings(BaseModel):
    """Where chain-of-thought captions come from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str | None = None
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    prompt_version: str = "v1"
    max_concurrency: int = Field(8, ge=1, le=256)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(3, ge=0, le=10)
    video_mode: Literal["frames", "video_url"] = "frames"
    start_server: bool = False
    server_python: str = ".venv-vllm/bin/python"


class S3Settings(BaseModel):
    """Where the S3 (MinIO) server is; only used when the store or an input is an s3:// URI.

    Settings are flow parameters, which Prefect stores and shows in its UI, so they never hold
    credentials: those are resolved where the store is opened (`tasks.s3_access`), from the worker's
    environment or from the Prefect `Secret` block named here.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str | None = None
    secure: bool = False
    credentials_block: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_credentials(cls, data: object) -> object:
        if isinstance(data, dict) and {"access_key", "secret_key"} & data.keys():
            raise ValueError(
                "S3 credentials do not belong in settings (Prefect stores them): set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY in the worker's environment, or name a Prefect Secret block in "
                "s3.credentials_block"
            )
        return data


class PipelineSettings(BaseModel):
    """Everything a dubbing run needs; flows take it as one parameter so the UI shows it whole."""

    # A validation error must not echo a refused secret into a log.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    workdir: str
    preset: Literal["tiny", "thinksound"] = "tiny"
    weights: str | None = None
    clip_model: str = "facebook/metaclip-h14-fullcc2.5b"
    t5_model: str = "google/t5-v1_1-xl"
    synchformer_weights: str | None = None
    clap_model: str = "laion/larger_clap_general"
    tagger_model: str = "MIT/ast-finetuned-audioset-10-10-0.4593"
    device: str = "cpu"
    precision: Precision = "fp32"
    steps: int = Field(24, ge=1, le=1000)
    cfg_scale: float = Field(5.0, ge=0)
    seed: int = 0
    batch_size: int = Field(8, ge=1, le=1024)
    # The longest video accepted; a longer one fails its item unless `truncate` dubs its first part.
    max_duration_sec: float = Field(600.0, gt=0)
    truncate: bool = False
    # Windows of longer videos: joined in latent space by default (one coherent track; see README).
    join: JoinMode = "multidiffusion"
    window_overlap_sec: float = Field(1.0, gt=0, le=3.0)
    store: str | None = None
    # Report links: presigned S3 URLs live this long (S3's limit is 7 days); a local store's outputs
    # are linked under `artifact_base_url` when it is set (where `thinksound serve` serves them).
    link_expiry_s: int = Field(7 * 24 * 3600, ge=1, le=7 * 24 * 3600)
    artifact_base_url: str | None = None
    executor: Executor = "local"
    # With executor "ray": the cluster to join; None starts a local Ray for the run and stops it after.
    ray_address: str | None = None
    # Model workers (Ray actors holding warm models), GPUs each one requests (fractions share a GPU),
    # and CPUs each Ray task or worker requests.
    ray_workers: int = Field(2, ge=1, le=4096)
    ray_gpus: float = Field(0.0, ge=0, le=64)
    ray_cpus: float = Field(1.0, gt=0, le=256)
    # Folders (and s3:// prefixes; "s3://" alone admits every S3 URI) that inputs must resolve into.
    # The flows fill in the input's own folder when none are given; empty means unrestricted.
    input_roots: tuple[str, ...] = ()
    # None: the file WORKDIR/lineage.duckdb. Shared by many runs and workers:
    # 'ducklake:postgres:<libpq conninfo>' (no password: PGPASSWORD or ~/.pgpass where it runs), with
    # its data files in `lineage_data` (a directory or s3://bucket/prefix/, on the store's S3 server).
    lineage: str | None = None
    lineage_data: str | None = None
    # On a shared lineage a run renews a lease this long (every quarter of it); a run whose lease ended
    # (killed, or cut off from the catalog) shows as 'abandoned', and its claims pass to other runs.
    lineage_lease_s: float = Field(60.0, ge=1, le=3600)
    s3: S3Settings = S3Settings()
    quality: QualitySettings = QualitySettings()
    cot: CotSettings = CotSettings()

    @model_validator(mode="after")
    def _check_duration(self) -> PipelineSettings:
        if self.max_duration_sec < MIN_CONDITIONING_SEC:
            raise ValueError(f"max_duration_sec must be at least {MIN_CONDITIONING_SEC} s")
        return self

    @model_validator(mode="after")
    def _check_ray_address(self) -> PipelineSettings:
        if self.ray_address is None:
            return self
        if self.executor != "ray":
            raise ValueError("ray_address is only used with executor 'ray'")
        if not _RAY_ADDRESS.match(self.ray_address):
            raise ValueError(
                f"ray_address must be HOST:PORT, ray://HOST:PORT or 'auto', got {self.ray_address!r}"
            )
        return self

    @model_validator(mode="after")
    def _check_lineage(self) -> PipelineSettings:
        if self.lineage is None:
            if self.lineage_data is not None:
                raise ValueError("lineage_data is only for a shared lineage (lineage='ducklake:postgres:...')")
            return self
        check_catalog(self.lineage)
        if not self.lineage_data:
            raise ValueError(
                "a shared lineage needs lineage_data: where its data files go (a directory every worker "
                "reaches, or s3://bucket/prefix/)"
            )
        return self

    @property
    def workdir_path(self) -> Path:
        return Path(self.workdir).expanduser().resolve()

    @property
    def lineage_path(self) -> Path:
        return self.workdir_path / "lineage.duckdb"

    @property
    def lineage_target(self) -> str:
        """Where lineage is: the shared `ducklake:postgres:...` location, else this workdir's file."""
        return self.lineage or str(self.lineage_path)

    @property
    def store_target(self) -> str:
        return self.store or str(self.workdir_path / "artifacts")

    @property
    def scratch_dir(self) -> Path:
        return self.workdir_path / "scratch"

    def synthesis_params(self) -> dict[str, object]:
        """The parameters that change the generated audio, recorded in lineage and hashed into keys."""
        return {
            "preset": self.preset,
            "weights": self.weights,
            "precision": self.precision,
            "steps": self.steps,
            "cfg_scale": self.cfg_scale,
            "seed": self.seed,
            "join": self.join,
            "window_overlap_sec": self.window_overlap_sec,
        }


def merge_settings(base: PipelineSettings, overrides: Mapping[str, Any] | None) -> PipelineSettings:
    """`base` with `overrides` applied field by field (sections such as `quality` too), validated again.

    Flow parameters and recorded runs give partial settings; merging keeps every field they do not name.
    """
    if not overrides:
        return base
    return PipelineSettings.model_validate(_deep_merge(base.model_dump(), overrides))


def _deep_merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for name, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(name), dict):
            merged[name] = _deep_merge(merged[name], value)
        else:
            merged[name] = value
    return merged
