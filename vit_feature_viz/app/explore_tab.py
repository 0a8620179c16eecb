"""The "Explore a feature" tab: the dataset images that activate one feature most (/examples), where it
fires in an uploaded image (/patch_map), and that image with the feature raised in it (/accentuate). The feature
is an MLP channel, or with the `sae` objective a latent of the SAE in the tab's SAE box (app/sae_source.py)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Collection

import gradio as gr

from ..errors import VizError
from .common import (
    DEFAULT_DATASET, DEFAULT_SPLIT, AppContext, ModelCache, add_rows, as_int, check_name, feature_spec, on_gpu,
    open_image, over_cap, upload_sha256, user_errors, visitor_token,
)
from .sae_source import SAE_BOX_INFO, sae_objective_or_name

EXPLORE_OBJECTIVES = ("feature", "sae")  # an MLP channel, or a latent of the SAE box's SAE (its patch mean)

SECONDS_PER_SCANNED_IMAGE = 0.01  # ZeroGPU duration estimate for dataset scans
MAP_PX = 320  # the patch map box's height: an uploaded image's map is drawn at this size
HEARTBEAT_S = 0.5  # a running accentuation yields this often: the points where a Stop lands


class Explorer:
    """/examples and /patch_map for one hardware preset, on the shared model cache."""

    def __init__(self, preset, models: ModelCache, uploads: Callable[[], Collection[str]] = tuple,
                 default_dataset: str = DEFAULT_DATASET):
        self.preset = preset
        self.models = models
        self.default_dataset = default_dataset  # an empty Dataset box scans this one
        self.uploads = uploads  # the paths gradio received as uploads: the only files /patch_map may read
        self._scan_on_device = on_gpu(self._scan, duration=self._scan_duration)

    def check_feature(self, model, layer, feature, objective="feature", sae=None, session=None, token=None):
        """One feature of a layer, checked once: the ScanTarget that the scan on the device takes as it is. With
        the `sae` objective, a latent of the SAE box's SAE (read with `token`, within the preset's cap)."""
        from ..examples import plan_scan

        layer = as_int(layer, "layer")
        objective = str(objective or "feature")
        if objective not in EXPLORE_OBJECTIVES:
            raise VizError(f"Unknown objective '{objective}': pick one of {', '.join(EXPLORE_OBJECTIVES)}.")
        objective = sae_objective_or_name(objective, sae, session, layer, self.preset, token)
        return plan_scan(model, layer, feature_spec(feature), objective, max_features=1)

    def patch_map(self, model_id, layer, feature, image, objective="feature", sae="", session=None,
                  oauth_token: gr.OAuthToken | None = None):
        """/patch_map: where `feature` of `layer` fires in an uploaded image (heatmap overlay); for an SAE latent,
        its TopK code at each patch."""
        from ..core.patchmap import draw_patch_map

        with user_errors("drawing the patch map"):
            image = open_image(image, self.uploads())
            token = visitor_token(oauth_token)
            model = self.models.get(model_id, token=token)
            target = self.check_feature(model, layer, feature, objective, sae, session, token)
            return draw_patch_map(model, image, target.objective, target.features[0],  # as checked
                                  display_px=MAP_PX)  # drawn at the size of its box: sharp labels

    def accentuate(self, model_id, layer, feature, image, steps, weight, session=None,
                   oauth_token: gr.OAuthToken | None = None):
        """/accentuate: the uploaded image with the feature raised in it, staying close to it (core/accentuate.py):
        [(image as the model sees it), (accentuated), (difference), (the accentuated image's patch map)], each
        captioned, and the session gallery, which gets the accentuated image as a row named with the upload's
        sha256 and the weight (as the CLI writes it). Under the preset's caps; a Stop ends it at its next step."""
        from ..core.accentuate import ACCENTUATE_STEPS, accentuate, accentuated_name
        from ..core.patchmap import draw_patch_map
        from ..jobs import with_patch_map

        with user_errors("accentuating the image"):
            preset = self.preset
            picture = open_image(image, self.uploads())  # checked: this app's upload or inline data
            sha256 = upload_sha256(image)
            steps = as_int(steps if steps not in (None, "") else min(ACCENTUATE_STEPS, preset.max_steps), "steps",
                           minimum=1)
            if steps > preset.max_steps:
                raise over_cap(preset, "max steps", steps, preset.max_steps, "steps")
            model = self.models.get(model_id, token=visitor_token(oauth_token))
            if model.image_size > preset.max_image_size:
                raise over_cap(preset, "max image size", model.image_size, preset.max_image_size, "px")
            target = self.check_feature(model, layer, feature)
            feature = target.features[0]
            result = yield from _until_done(lambda on_step: accentuate(
                model, picture, target.layer, feature, objective=target.objective, steps=steps,
                weight=None if weight in (None, "") else weight, callback=on_step), outputs=2)
            result.image_sha256 = sha256
            result.objective = accentuated_name(target.objective, result.weight, sha256,
                                                image.get("orig_name") if isinstance(image, dict) else None)
            session = add_rows(session, [with_patch_map(model, result.to_row(), target.objective)], model.backend)
            patch_map = draw_patch_map(model, result.accentuated, target.objective, feature, rendered=True,
                                       display_px=MAP_PX)
            yield [(result.original, f"your image · feature {feature} {result.activation_init:.3f}"),
                   (result.accentuated, f"accentuated · {result.activation:.3f} · weight {result.weight:g}"),
                   (result.difference, f"difference · mean |change| {result.pixel_mean_abs:.3f}"),
                   (patch_map, "patch map of the accentuated image")], session

    def cls_attention(self, model_id, layer, image, oauth_token: gr.OAuthToken | None = None):
        """/cls_attention: where the CLS token of block `layer` looks in an uploaded image (mean, then each head)."""
        from ..analysis.cls_attention import attention_overlay

        with user_errors("drawing the CLS attention"):
            image = open_image(image, self.uploads())
            model = self.models.get(model_id, token=visitor_token(oauth_token))
            return attention_overlay(model, image, model.check_layer(as_int(layer, "layer")).index)

    def examples(self, model_id, layer, feature, dataset, split, max_images, top_k, session=None, objective="feature",
                 sae="", oauth_token: gr.OAuthToken | None = None, progress=gr.Progress()):
        """/examples: the dataset images that activate `feature` most, each followed by its patch map; the
        model, the dataset and an SAE are read as the visitor may read them (visitor_token). An SAE latent's
        rows go into the session gallery under its objective (`sae(fc1 1a2b3c4d)`), next to the channels."""
        from ..examples import example_rows

        with user_errors("scanning the dataset"):
            preset = self.preset
            token = visitor_token(oauth_token)
            dataset = check_name(dataset, "dataset", self.default_dataset)
            split = str(split or "").strip() or None
            max_images = as_int(max_images if max_images not in (None, "") else preset.max_scan_images,
                                "max images", minimum=1)
            if max_images > preset.max_scan_images:
                raise over_cap(preset, "max dataset images", max_images, preset.max_scan_images, "images")
            top_k = as_int(top_k if top_k not in (None, "") else 8, "top k", minimum=1)
            if top_k > preset.max_top_k:
                raise over_cap(preset, "max examples", top_k, preset.max_top_k, "examples")
            model = self.models.get(model_id, token=token)
            target = self.check_feature(model, layer, feature, objective, sae, session, token)
            progress(None, desc=f"Scanning up to {max_images} images of {dataset}")
            found = self._scan_on_device(target, dataset, split, max_images, top_k, token)
            rows = example_rows(model, target.layer, target.objective, dataset, {target.features[0]: found})
            session = add_rows(session, rows, model.backend)
            gallery = []
            for rank, example in enumerate(found, 1):
                caption = f"#{rank} · row {example.index} · {example.score:.3f}"
                gallery.append((example.image, caption))
                if example.patch_map is not None:
                    gallery.append((example.patch_map, f"#{rank} patch map"))
            return gallery, session

    def _scan_duration(self, target, dataset, split, max_images, top_k, token=None) -> int:
        return int(min(self.preset.max_gpu_seconds, 20 + SECONDS_PER_SCANNED_IMAGE * max_images))

    def _scan(self, target, dataset, split, max_images, top_k, token=None):
        """On the device: scan for the target's one feature as it was checked."""
        from ..examples import scan_examples

        with user_errors("scanning the dataset"):
            model = self.models.get(target.model_id, token=token)
            return scan_examples(model, dataset=dataset, target=target, split=split, max_images=max_images,
                                 top_k=top_k, progress=False, token=token)[target.features[0]]


class _Stopped(Exception):
    """Raised from the accentuation's step callback once the request is gone (Stop, closed tab)."""


def _until_done(run, outputs: int = 1):
    """Run `run(on_step)` in a thread, yielding gr.skip() for each of the event's `outputs` while it works (where a
    Stop closes the request); returns its result. Closing this generator stops the work at its next step."""
    results: queue.Queue = queue.Queue()
    stop = threading.Event()

    def on_step(step, image):
        if stop.is_set():
            raise _Stopped

    def work():
        try:
            results.put(("done", run(on_step)))
        except _Stopped:
            results.put(("stopped", None))
        except BaseException as err:  # raised in the request, where user_errors words it
            results.put(("error", err))

    threading.Thread(target=work, name="vfv-accentuate", daemon=True).start()
    try:
        while True:
            try:
                kind, value = results.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                yield gr.skip() if outputs == 1 else (gr.skip(),) * outputs
                continue
            if kind == "error":
                raise value
            return value
    finally:
        stop.set()


def build(ctx: AppContext) -> Explorer:
    """The "Explore a feature" tab inside the open gr.Tabs, for the shared layer and feature pickers."""
    from ..core.accentuate import ACCENTUATE_STEPS, ACCENTUATE_WEIGHT

    preset = ctx.preset
    explorer = Explorer(preset, ctx.models, uploads=lambda: ctx.demo.upload_file_set, default_dataset=ctx.default_dataset)
    with gr.Tab("Explore a feature"):
        with gr.Row():
            dataset = gr.Textbox(ctx.default_dataset, label="Dataset (Hub id or local folder)")
            split = gr.Textbox(DEFAULT_SPLIT, label="Split", placeholder="first of test, validation, train")
            max_images = gr.Number(min(200, preset.max_scan_images), precision=0, minimum=1,
                                   maximum=preset.max_scan_images, label="Max images to scan")
            top_k = gr.Slider(1, preset.max_top_k, value=min(8, preset.max_top_k), step=1, label="Top k")
        with gr.Row():
            objective = gr.Dropdown(list(EXPLORE_OBJECTIVES), value="feature", label="Objective",
                                    info="feature: an MLP channel · sae: a latent of the SAE in the SAE box",
                                    elem_id="explore-objective")
            sae = gr.Textbox("", label="SAE (gallery)", info=SAE_BOX_INFO, elem_id="explore-sae")
        find = gr.Button("Find top dataset examples", variant="primary")
        examples = gr.Gallery(label="Top examples and their patch maps", columns=4, fit_columns=False, format="png")
        with gr.Row():
            upload = gr.Image(type="pil", label="Your image", sources=["upload", "clipboard"], height=320,
                              elem_id="upload")
            overlay = gr.Image(type="pil", label="Patch activation map", format="png", interactive=False, height=MAP_PX,
                               elem_id="overlay")
            attention = gr.Image(type="pil", label="CLS attention of this block (mean, then each head)", format="png",
                                 interactive=False, height=320, elem_id="cls-attention")
        with gr.Row():
            map_button = gr.Button("Map this image", elem_id="map-image")
            accentuate_button = gr.Button("Accentuate", elem_id="accentuate")
            accentuate_steps = gr.Number(min(ACCENTUATE_STEPS, preset.max_steps), precision=0, minimum=1,
                                         maximum=preset.max_steps, label="Accentuation steps")
            accentuate_weight = gr.Number(ACCENTUATE_WEIGHT, minimum=0, label="Stay-close weight (block 0)",
                                          info="larger: closer to your image")
        accentuated = gr.Gallery(label="Your image, accentuated, their difference, the accentuated patch map",
                                 columns=4, fit_columns=False, format="png", elem_id="accentuated")

    scanning = find.click(
        explorer.examples, [ctx.model_id, ctx.layer, ctx.feature, dataset, split, max_images, top_k, ctx.session,
                            objective, sae],
        [examples, ctx.session], api_name="examples", **ctx.device_job(),
    )
    mapping = map_button.click(explorer.patch_map, [ctx.model_id, ctx.layer, ctx.feature, upload, objective, sae,
                                                    ctx.session], [overlay],
                               api_name="patch_map", **ctx.device_job())
    attending = map_button.click(explorer.cls_attention, [ctx.model_id, ctx.layer, upload], [attention],
                                 api_name="cls_attention", **ctx.device_job())
    accentuating = accentuate_button.click(
        explorer.accentuate, [ctx.model_id, ctx.layer, ctx.feature, upload, accentuate_steps, accentuate_weight,
                              ctx.session],
        [accentuated, ctx.session], api_name="accentuate", **ctx.device_job())
    ctx.jobs.extend([scanning, mapping, attending, accentuating])
    ctx.sae_boxes.append(sae)
    return explorer
