"""The "SAE" tab: train a sparse autoencoder on the loaded model's layer within the preset's cap (/sae_train,
saved into the visitor's session gallery, so Sharing pushes it), with step-by-step progress and a Stop that
keeps the last checkpoint, or open one from a gallery (/sae_open) to see its measurements. Either fills the SAE
boxes of the Render, Explore and Analyses tabs, where its latents render, scan and get names."""

from __future__ import annotations

import queue
import threading
import time

import gradio as gr

from ..core.pace import Pace
from ..errors import VizError
from .common import (
    SESSION_GALLERY, AppContext, ModelCache, as_int, check_name, inert, is_session_gallery, over_cap, session_path,
    user_errors, visitor_token,
)
from .sae_source import requested_sae, session_sae

HEARTBEAT_S = 0.5  # a running training yields this often: the points where a Stop lands

DEFAULT_SAE_DATASET = "vit-feature-viz/shapes-shape"  # built in: works offline with the built-in models


class SaeTrainer:
    """/sae_train and /sae_open for one hardware preset, on the shared model cache."""

    def __init__(self, preset, models: ModelCache):
        self.preset = preset
        self.models = models

    def train(self, model_id, layer, site, dataset, split, max_images, latents, k, epochs, session=None,
              oauth_token: gr.OAuthToken | None = None, progress=gr.Progress()):
        """Train on at most the preset's `max_sae_images` image passes (images x epochs), showing the passes done
        and the time left; yields the SAE's measurements as Markdown, the session gallery it was saved into and
        what the SAE boxes say for it. A Stop ends it at its next image batch with the checkpoint saved in the
        session gallery: the same request again resumes there."""
        from ..sae.train import SaeSettings, train_sae

        with user_errors("training the sparse autoencoder"):
            token = visitor_token(oauth_token)
            dataset = check_name(dataset, "dataset", DEFAULT_SAE_DATASET)
            split = str(split or "").strip() or None
            max_images = as_int(max_images, "max images", minimum=1)
            epochs = as_int(epochs, "epochs", minimum=1)
            cap = self.preset.max_sae_images
            if max_images * epochs > cap:
                raise over_cap(self.preset, "SAE training: images x epochs", max_images * epochs, cap, "image passes")
            if site not in ("fc1", "residual"):
                raise VizError(f"Unknown site '{site}': pick fc1 or residual.")
            settings = SaeSettings(layer=as_int(layer, "layer", minimum=0), site=site, max_images=max_images,
                                   latents=as_int(latents, "latents", minimum=0), k=as_int(k, "K", minimum=1),
                                   epochs=epochs)
            model = self.models.get(model_id, token=token)
            session = session_path(session)
            yield gr.skip(), session, gr.skip()  # the session state holds the folder whatever happens next
            progress(None, desc=f"training on {max_images} images of {dataset}, {epochs} epoch(s)")
            pace = Pace(max_images * epochs)  # fed by the training thread, shown from this request

            def on_batch(step, done, total):
                pace.total = total or pace.total
                pace.update(done)
                step()  # raises once the request is gone: the training stops here, its checkpoint saved

            def show():
                if pace.done:
                    progress((pace.done, pace.total), unit="image passes",
                             desc=f"{pace.done}/{pace.total} image passes · {pace.text()}")

            saved = yield from _until_done(lambda step: train_sae(
                model, dataset, session, settings, split=split, progress=False, token=token,
                eval_images=min(256, max_images), on_batch=lambda done, total: on_batch(step, done, total)), show)
            yield describe(saved.config), session, session_sae(saved.site)

    def open(self, source, model_id, layer, session=None, oauth_token: gr.OAuthToken | None = None):
        """The measurements of the SAE of `layer` in a gallery (Hub id or, off a Space, a folder), or in the
        session gallery when `source` is empty; and what the SAE boxes say for it. Read as the Render tab reads
        it: with the visitor's token, within the preset's size cap."""
        with user_errors("opening the sparse autoencoder"):
            layer = as_int(layer, "layer", minimum=0)
            source = str(source or "").strip()
            saved = requested_sae(source or SESSION_GALLERY, session, layer, self.preset, visitor_token(oauth_token))
            named = session_sae(saved.site) if not source or is_session_gallery(source) else f"{source} ({saved.site})"
            return describe(saved.config), named


class _Stopped(Exception):
    """Raised from the training's batch callback once the request is gone (Stop, closed tab)."""


def _until_done(run, show):
    """Run `run(step)` in a thread, calling `show()` and yielding gr.skip()s while it works (where a Stop closes
    the request): after its first step, then at least every HEARTBEAT_S; returns its result. `step()` raises
    _Stopped once this generator is closed, so the work ends at its next batch."""
    results: queue.Queue = queue.Queue()
    stop = threading.Event()

    def step():
        if stop.is_set():
            raise _Stopped
        results.put(("step", None))

    def work():
        try:
            results.put(("done", run(step)))
        except _Stopped:
            results.put(("stopped", None))
        except BaseException as err:  # raised in the request, where user_errors words it
            results.put(("error", err))

    threading.Thread(target=work, name="vfv-sae-train", daemon=True).start()
    shown_at = None
    try:
        while True:
            try:
                kind, value = results.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                kind, value = "tick", None
            if kind == "error":
                raise value
            if kind == "done":
                return value
            if kind == "tick" or shown_at is None or time.monotonic() - shown_at >= HEARTBEAT_S:
                shown_at = time.monotonic()
                show()
                yield gr.skip(), gr.skip(), gr.skip()
    finally:
        stop.set()


def describe(config: dict) -> str:
    """An SAE's config as Markdown: what it reads, its size and its measurements."""
    m = config.get("metrics", {})
    lines = [f"**SAE of layer {config['layer']} ({config['site']})** of `{inert(config['model_id'])}`: "
             f"{config['latents']} latents, K = {config['k']} (TopK), objective name "
             f"`sae({config['site']} {str(config.get('weights_sha256', ''))[:8]})`",
             f"- fraction of variance explained: **{m.get('fve', float('nan')):.3f}**, L0 {m.get('l0', 0):.1f}, "
             f"dead latents {m.get('dead_latents', '?')}/{config['latents']} (on {m.get('eval_images', '?')} images)"]
    if "accuracy_spliced" in m:
        lines.append(f"- accuracy {100 * m['accuracy']:.1f}% -> {100 * m['accuracy_spliced']:.1f}% with the layer "
                     f"replaced by its reconstruction")
    if "top1_agreement" in m:
        lines.append(f"- top class unchanged on {100 * m['top1_agreement']:.1f}% of the images")
    if "next_block_relative_change" in m:
        lines.append(f"- the next block's output changes by {m['next_block_relative_change']:.3f} (relative)")
    return "\n".join(lines)


def build(ctx: AppContext) -> SaeTrainer:
    """The "SAE" tab inside the open gr.Tabs, for the shared model box and layer picker."""
    preset = ctx.preset
    trainer = SaeTrainer(preset, ctx.models)
    with gr.Tab("SAE"):
        gr.Markdown(
            "Train a sparse autoencoder (TopK) on the patch tokens of the loaded model's layer: its latents are "
            "features, often more about one thing than an MLP channel. It is saved with your gallery "
            f"(sae/<layer>-<site>/) and pushed with it. At most {preset.max_sae_images} image passes (images x "
            "epochs) per request on this hardware."
        )
        with gr.Row():
            site = gr.Dropdown(["fc1", "residual"], value="fc1", label="Site", elem_id="sae-site")
            dataset = gr.Textbox(DEFAULT_SAE_DATASET, label="Dataset (Hub id)", elem_id="sae-dataset")
            split = gr.Textbox("train", label="Training split")  # not "Split": the Explore tab's box is named so
            max_images = gr.Number(min(300, preset.max_sae_images), precision=0, minimum=1, label="Images",
                                   elem_id="sae-images")
            epochs = gr.Number(1, precision=0, minimum=1, label="Epochs")
            latents = gr.Number(0, precision=0, minimum=0, label="Latents (0: 4x the width)", elem_id="sae-latents")
            k = gr.Number(16, precision=0, minimum=1, label="K (active per token)")
        with gr.Row():
            train = gr.Button("Train SAE", variant="primary", elem_id="sae-train")
            stop = gr.Button("Stop", variant="stop", elem_id="sae-stop")
        status = gr.Markdown(elem_id="sae-status", min_height=48)  # where the progress bar is drawn
        with gr.Row():
            source = gr.Textbox("", label="Open an SAE from a gallery (Hub id; empty: your session gallery)",
                                elem_id="sae-source")
            open_button = gr.Button("Open SAE", elem_id="sae-open")
        report = gr.Markdown(elem_id="sae-report")
        named = gr.State("")  # what the SAE boxes of the other tabs say for the SAE trained or opened here
    training = train.click(trainer.train, [ctx.model_id, ctx.layer, site, dataset, split, max_images, latents, k,
                                           epochs, ctx.session], [report, ctx.session, named], api_name="sae_train",
                           show_progress_on=[status], **ctx.device_job())
    opening = open_button.click(trainer.open, [source, ctx.model_id, ctx.layer, ctx.session], [report, named],
                                api_name="sae_open", preprocess=False)
    if ctx.sae_boxes:
        fill = dict(fn=lambda name: [name] * len(ctx.sae_boxes), inputs=[named], outputs=list(ctx.sae_boxes),
                    api_visibility="private", queue=False)
        training.success(**fill)
        opening.success(**fill)
    ctx.jobs.append(training)
    ctx.stop_buttons.append(stop)
    return trainer
