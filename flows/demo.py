"""The web demo (Gradio): one video in, a dubbed video out, with the chain of thought shown and editable.

`build_app` lays out the widgets over a `DemoBackend`; `serve` starts it on 127.0.0.1. Every failure a
user can cause comes back as a one-line message in the page, never as a stack trace.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import gradio as gr
from gradio.processing_utils import save_file_to_cache
from gradio.utils import get_upload_folder

from flows.demo_backend import STAGE_LABELS, TINY_NOTICE, DemoBackend, GenerationRequest
from flows.demo_input import MEGABYTE, InputRejected

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
PRECISIONS = ["fp32", "bf16", "fp16"]
# System fonts only: the default theme would fetch web fonts from the internet.
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"],
    font_mono=["ui-monospace", "monospace"],
)
KEEP_TYPED_COT = "(used, typed) => (typed && typed.trim()) ? typed : used"
# Let each output sit in a box a person can take in at once.
CSS = "#status {min-height: 7em} #dubbed-video video {max-height: 320px}"


def _intro(backend: DemoBackend) -> str:
    limits = backend.limits
    text = (
        "# ThinkSound: give a silent video a soundtrack\n"
        "Upload a video (at most "
        f"{limits.max_duration_sec:g} s and {limits.max_upload_mb:g} MB), optionally describe it, and generate. "
        "Leave the chain of thought empty to have it written "
        + ("by the vLLM server" if backend.settings.cot.url else "from the caption")
        + "; edit it and generate again to steer the sound."
    )
    if backend.is_tiny:
        text += (
            f"\n\n⚠️ **Preset `tiny`: {TINY_NOTICE}.** Its models are randomly initialised; "
            "it only exercises the pipeline. Start the demo with `--preset thinksound` for real soundtracks."
        )
    return text


def _generate_handler(backend: DemoBackend):
    def generate(video, caption, caption_cot, seed, steps, cfg_scale, precision, progress=gr.Progress()):
        """Dub the uploaded video with the tiny or real models; returns the outputs and the CoT used."""
        order = list(STAGE_LABELS)

        def on_stage(name: str) -> None:
            step = order.index(name) if name in order else 0
            progress((step, len(order)), desc=f"{name}: {STAGE_LABELS.get(name, name)}", unit="stages")

        progress(0, desc="checking the upload" if backend.is_warm else "loading the models (first request)")
        request = GenerationRequest(
            caption=caption or "",
            caption_cot=caption_cot or "",
            seed=int(seed if seed is not None else 0),
            steps=int(steps),
            cfg_scale=float(cfg_scale),
            precision=precision,
        )
        try:
            outcome = backend.generate(video, request, on_stage=on_stage)
        except InputRejected as exc:
            raise gr.Error(str(exc), title="Cannot dub this input", print_exception=False) from None
        except Exception as exc:
            logger.exception("demo generation crashed")
            raise gr.Error(
                f"The pipeline stopped with an internal error ({type(exc).__name__}); the server log has details.",
                title="Internal error",
                print_exception=False,
            ) from None
        used_cot = str(outcome.item.get("caption_cot") or "") or caption_cot
        return (
            outcome.message,
            _served_copy(outcome.video_path),
            _served_copy(outcome.audio_path),
            used_cot,
            outcome.spectrogram,
            outcome.metrics,
        )

    return generate


def _served_copy(path: Path | None) -> str | None:
    """A copy of a published file in Gradio's own cache, the only folder the app serves files from.

    The work directory (lineage, Prefect's state, the upload store, every other output) is never
    served: anyone who can reach the app could fetch any file in it by path.
    """
    if path is None:
        return None
    return save_file_to_cache(path, str(get_upload_folder()))


def private_paths(backend: DemoBackend) -> list[str]:
    """What the app must never serve, even if a later change allowed a folder above it."""
    workdir = backend.settings.workdir_path
    lineage = backend.settings.lineage_path
    return [
        str(lineage),
        f"{lineage}.wal",
        str(workdir / "prefect"),
        str(backend.uploads_dir),
        str(workdir / "artifacts"),
        str(backend.settings.scratch_dir),
        str(workdir / "logs"),
    ]


def build_app(backend: DemoBackend) -> gr.Blocks:
    """The Blocks app; its one endpoint `/generate` is what the page and `gradio_client` call."""
    # Gradio keeps a copy of every upload and output it serves; the originals live in the work directory.
    with gr.Blocks(title="ThinkSound demo", analytics_enabled=False, delete_cache=(3600, 24 * 3600)) as app:
        gr.Markdown(_intro(backend), elem_id="intro")
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="Video", sources=["upload"], elem_id="video-input")
                caption = gr.Textbox(label="Caption (optional)", placeholder="e.g. a dog barks on a beach")
                caption_cot = gr.Textbox(
                    label="Chain of thought (optional; the one used appears here, edit it and regenerate)",
                    lines=4,
                    elem_id="cot",
                )
                with gr.Row():
                    seed = gr.Number(label="Seed", value=backend.settings.seed, precision=0, minimum=0)
                    precision = gr.Radio(PRECISIONS, value=backend.settings.precision, label="Precision")
                with gr.Row():
                    steps = gr.Slider(1, 100, value=backend.settings.steps, step=1, label="Steps")
                    cfg_scale = gr.Slider(0, 15, value=backend.settings.cfg_scale, step=0.5, label="CFG scale")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                dubbed = gr.Video(label="Dubbed video", interactive=False, elem_id="dubbed-video")
                audio = gr.Audio(label="Audio (44.1 kHz stereo)", type="filepath", interactive=False)
                spectrogram = gr.Image(label="Spectrogram", type="pil", interactive=False, format="png")
                metrics = gr.JSON(label="Quality metrics", max_height=280)
                used_cot = gr.Textbox(visible=False)
        generation = button.click(
            _generate_handler(backend),
            inputs=[video, caption, caption_cot, seed, steps, cfg_scale, precision],
            outputs=[status, dubbed, audio, used_cot, spectrogram, metrics],
            api_name="generate",
            concurrency_limit=1,
            # A click during a generation (say, after editing the CoT) runs next instead of being dropped.
            trigger_mode="always_last",
            show_progress_on=[status],
        )
        # The CoT used goes into the box only when the box is empty (it was written for this video);
        # text the user typed, before or during the generation, is never overwritten.
        generation.then(
            None, inputs=[used_cot, caption_cot], outputs=[caption_cot], js=KEEP_TYPED_COT, queue=False,
            api_visibility="private",
        )
    return app


def serve(backend: DemoBackend, *, port: int, share: bool = False, block: bool = True) -> gr.Blocks:
    """Start the app on 127.0.0.1:`port` and warm the models in the background.

    With `block=False` it returns the running app (tests close it with `app.close()`).
    """
    app = build_app(backend)
    app.queue(default_concurrency_limit=1)
    app.launch(
        server_name=HOST,
        server_port=port,
        share=share,
        prevent_thread_lock=True,
        max_file_size=int(backend.limits.max_upload_mb * MEGABYTE),
        blocked_paths=private_paths(backend),
        theme=THEME,
        css=CSS,
        footer_links=[],
        quiet=True,
    )
    threading.Thread(target=backend.warm_up, name="demo-warm-up", daemon=True).start()
    if block:
        app.block_thread()
    return app
