"""What the web demo does for one request, without any widgets: check, store, run `dub_video`, collect.

The demo is a face over the same flow the datasets use, so each generation is an item in lineage like
any other, and the models stay warm in this process between requests (`tasks.handles` keeps them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image
from pydantic import ValidationError

from flows.demo_input import InputRejected, UploadLimits, check_video
from flows.demo_spectrogram import spectrogram_image
from flows.dub import RunFailed, dub_video
from flows.report import stage_listeners
from tasks.config import PipelineSettings, Precision
from tasks.handles import process_handles, quiet_progress_bars
from tasks.reuse import metrics_from_published_record
from tasks.run_lineage import LineageLocked
from tasks.uploads import store_upload

logger = logging.getLogger(__name__)

TINY_NOTICE = "random weights: this audio is noise"

# The pipeline's stages in the order a single item meets them, with what the user is told.
STAGE_LABELS = {
    "ingest": "reading the video",
    "cot": "writing the chain of thought",
    "reuse": "looking for an identical earlier result",
    "features": "extracting video and text features",
    "synthesis": "generating audio (flow matching)",
    "qc": "quality checks",
    "publish": "loudness normalisation and muxing",
}


FINAL_PREFIX = "final_"
PUBLISHED_GROUP = "published_audio"
GENERATED_GROUP = "generated_audio_before_loudness_normalisation"


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """The per-request knobs a user sets in the app."""

    caption: str = ""
    caption_cot: str = ""
    seed: int = 0
    steps: int = 24
    cfg_scale: float = 5.0
    precision: Precision = "fp32"


def _spectrogram(audio: Path | None) -> Image.Image | None:
    """The audio's spectrogram with the generation windows that metrics.json (next to it) records."""
    if audio is None or not audio.is_file():
        return None
    record = audio.parent / "metrics.json"
    windows = (json.loads(record.read_text()).get("windows") or []) if record.is_file() else []
    return spectrogram_image(audio, windows=[(float(w["start_sec"]), float(w["end_sec"])) for w in windows])


@dataclass(frozen=True, kw_only=True)
class DemoOutcome:
    """One generation as the app shows it; paths are local files of the artifact store."""

    status: str
    message: str
    item: dict[str, object]
    run_id: str
    seconds: float
    video_path: Path | None = None
    audio_path: Path | None = None
    spectrogram: Image.Image | None = None
    metrics: dict[str, object] = field(default_factory=dict)


def _local_path(uri: object) -> Path | None:
    if not isinstance(uri, str) or not uri.startswith("file://"):
        return None
    return Path(unquote(urlparse(uri).path))


def _grouped_metrics(measured: dict[str, object]) -> dict[str, dict[str, object]]:
    """The published audio's metrics first; the generator's raw output (before loudness normalisation,
    whose peak of 0 dBFS is not clipping in what is published) after them."""
    rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in measured.items()}
    published = {k.removeprefix(FINAL_PREFIX): v for k, v in rounded.items() if k.startswith(FINAL_PREFIX)}
    if "loudness_gain_db" in rounded:
        published["loudness_gain_db"] = rounded["loudness_gain_db"]
    generated = {k: v for k, v in rounded.items() if not k.startswith(FINAL_PREFIX) and k != "loudness_gain_db"}
    groups = {PUBLISHED_GROUP: published, GENERATED_GROUP: generated}
    return {name: values for name, values in groups.items() if values}


@contextlib.contextmanager
def _listening(on_stage: Callable[[str], None] | None) -> Iterator[None]:
    if on_stage is None:
        yield
        return
    stage_listeners.append(on_stage)
    try:
        yield
    finally:
        stage_listeners.remove(on_stage)


class DemoBackend:
    """Runs demo requests against one work directory with fixed base settings."""

    def __init__(self, *, settings: PipelineSettings, limits: UploadLimits) -> None:
        # Let the app take any video up to its own limit whole, instead of the dataset default's cut.
        self.settings = settings.model_copy(update={"max_duration_sec": limits.max_duration_sec, "batch_size": 1})
        self.limits = limits
        self._warm = threading.Event()

    @property
    def uploads_dir(self) -> Path:
        return self.settings.workdir_path / "uploads"

    @property
    def is_tiny(self) -> bool:
        return self.settings.preset == "tiny"

    @property
    def is_warm(self) -> bool:
        return self._warm.is_set()

    def warm_up(self) -> None:
        """Load the generator and the feature extractor once, before the first request needs them."""
        started = time.perf_counter()
        with quiet_progress_bars():
            process_handles().generator(self.settings)
            process_handles().extractor(self.settings)
        self._warm.set()
        logger.info("demo models loaded in %.1f s", time.perf_counter() - started)

    def request_settings(self, request: GenerationRequest) -> PipelineSettings:
        update = {
            "seed": request.seed,
            "steps": request.steps,
            "cfg_scale": request.cfg_scale,
            "precision": request.precision,
        }
        if request.caption_cot.strip():
            # With a CoT server configured the CoT stage asks it for every item; the user's own
            # (edited) text must be the one used, so this request goes without the server.
            update["cot"] = {**self.settings.cot.model_dump(), "url": None}
        try:
            return PipelineSettings.model_validate({**self.settings.model_dump(), **update})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise InputRejected(f"Invalid setting: {problems}.") from None

    def generate(
        self,
        video: str | Path | None,
        request: GenerationRequest,
        *,
        on_stage: Callable[[str], None] | None = None,
    ) -> DemoOutcome:
        """Dub one uploaded video; bad input raises InputRejected, item failures come back as outcomes."""
        if not video:
            raise InputRejected("Upload a video first.")
        check_video(Path(video), self.limits)
        settings = self.request_settings(request)
        source = store_upload(Path(video), self.uploads_dir)
        started = time.perf_counter()
        try:
            with _listening(on_stage):
                result = dub_video(
                    video=str(source),
                    settings=settings,
                    caption=request.caption.strip() or None,
                    caption_cot=request.caption_cot.strip() or None,
                    display_name=Path(video).name,
                )
        except RunFailed as failed:  # the item failed: the flow run is Failed, the outcome is shown
            result = failed.result
        except LineageLocked:
            raise InputRejected(
                "The lineage database is in use by another process (a `thinksound run` on this work "
                "directory?); try again when it has finished."
            ) from None
        return self._outcome(result, time.perf_counter() - started)

    def _outcome(self, result: dict[str, object], seconds: float) -> DemoOutcome:
        item = result["items"][0]
        status = item["status"]
        audio = _local_path(item.get("audio_uri"))
        measured = item.get("metrics") or (self._published_metrics(item) if item.get("cached") else {})
        metrics = {
            "status": status,
            "item_id": item.get("item_id"),
            "run_id": result["run_id"],
            "cot_backend": item.get("cot_backend"),
            "reused_earlier_result": item.get("cached"),
            # The listening scores as plain values (the only nested groups are the audio metrics).
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in (item.get("scores") or {}).items()},
            "candidates": item.get("candidates") or [],
            **_grouped_metrics(measured),
        }
        return DemoOutcome(
            status=status,
            message=self._message(item, result["run_id"], seconds),
            item=item,
            run_id=result["run_id"],
            seconds=seconds,
            video_path=_local_path(item.get("video_uri")),
            audio_path=audio,
            spectrogram=_spectrogram(audio),
            metrics=metrics,
        )

    @staticmethod
    def _published_metrics(item: dict[str, object]) -> dict[str, object]:
        """A reused result's metrics, from the metrics file published with it."""
        path = _local_path(item.get("metrics_uri"))
        if path is None or not path.is_file():
            return {}
        return metrics_from_published_record(path.read_bytes()) or {}

    def _message(self, item: dict[str, object], run_id: str, seconds: float) -> str:
        status = item["status"]
        if status == "succeeded":
            reused = " (an identical earlier result was reused)" if item.get("cached") else ""
            head = f"**Done** in {seconds:.1f} s{reused}."
        elif status == "rejected":
            head = f"**Rejected by the quality checks:** {item.get('error')}"
        else:
            head = f"**Failed at stage `{item.get('stage')}`:** {item.get('error')}"
        lines = [
            head,
            f"CoT source: `{item.get('cot_backend') or 'none'}` · item `{item.get('item_id')}` · run `{run_id}`",
        ]
        lines += listening_lines(item)
        if self.is_tiny:
            lines.append(f"⚠️ **Preset `tiny`: {TINY_NOTICE}.**")
        return "\n\n".join(lines)


def _num(value: object, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "n/a"


def listening_lines(item: dict[str, object]) -> list[str]:
    """The winner's listening scores and which of the candidates won, as Markdown lines."""
    scores = item.get("scores") or {}
    if not scores:
        return []
    lines = [
        f"Listening checks: DeSync {_num(scores.get('desync_sec'), '.2f')} s · CLAP {_num(scores.get('clap'), '.3f')}"
        f" · P(speech) {_num(scores.get('speech'), '.2f')} · P(music) {_num(scores.get('music'), '.2f')}"
    ]
    candidates = item.get("candidates") or []
    if len(candidates) > 1:
        parts = []
        for n, c in enumerate(candidates, start=1):
            cs = c.get("scores") or {}
            text = f"#{n} seed {c.get('seed')}: DeSync {_num(cs.get('desync_sec'), '.2f')} s, CLAP {_num(cs.get('clap'), '.3f')}"
            parts.append(f"**{text} (won)**" if c.get("seed") == item.get("seed") else text)
        lines.append(f"Best of {len(candidates)}: " + "; ".join(parts))
    return lines
