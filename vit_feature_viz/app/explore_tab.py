"""The "Explore a feature" tab: the dataset images that activate one feature most (/examples), and where it
fires in an uploaded image (/patch_map)."""

from __future__ import annotations

from collections.abc import Callable, Collection

import gradio as gr

from .common import (
    DEFAULT_DATASET, DEFAULT_SPLIT, AppContext, ModelCache, add_rows, as_int, check_name, feature_spec, on_gpu,
    open_image, over_cap, user_errors, visitor_token,
)

SECONDS_PER_SCANNED_IMAGE = 0.01  # ZeroGPU duration estimate for dataset scans
MAP_PX = 320  # the patch map box's height: an uploaded image's map is drawn at this size


class Explorer:
    """/examples and /patch_map for one hardware preset, on the shared model cache."""

    def __init__(self, preset, models: ModelCache, uploads: Callable[[], Collection[str]] = tuple,
                 default_dataset: str = DEFAULT_DATASET):
        self.preset = preset
        self.models = models
        self.default_dataset = default_dataset  # an empty Dataset box scans this one
        self.uploads = uploads  # the paths gradio received as uploads: the only files /patch_map may read
        self._scan_on_device = on_gpu(self._scan, duration=self._scan_duration)

    def check_feature(self, model, layer, feature):
        """One feature of a layer, checked once: the ScanTarget that the scan on the device takes as it is."""
        from ..examples import plan_scan

        return plan_scan(model, as_int(layer, "layer"), feature_spec(feature), max_features=1)

    def patch_map(self, model_id, layer, feature, image, oauth_token: gr.OAuthToken | None = None):
        """/patch_map: where `feature` of `layer` fires in an uploaded image (heatmap overlay)."""
        from ..core.patchmap import draw_patch_map

        with user_errors("drawing the patch map"):
            image = open_image(image, self.uploads())
            model = self.models.get(model_id, token=visitor_token(oauth_token))
            target = self.check_feature(model, layer, feature)
            return draw_patch_map(model, image, target.objective, target.features[0],  # as checked
                                  display_px=MAP_PX)  # drawn at the size of its box: sharp labels

    def cls_attention(self, model_id, layer, image, oauth_token: gr.OAuthToken | None = None):
        """/cls_attention: where the CLS token of block `layer` looks in an uploaded image (mean, then each head)."""
        from ..analysis.cls_attention import attention_overlay

        with user_errors("drawing the CLS attention"):
            image = open_image(image, self.uploads())
            model = self.models.get(model_id, token=visitor_token(oauth_token))
            return attention_overlay(model, image, model.check_layer(as_int(layer, "layer")).index)

    def examples(self, model_id, layer, feature, dataset, split, max_images, top_k, session=None,
                 oauth_token: gr.OAuthToken | None = None, progress=gr.Progress()):
        """/examples: the dataset images that activate `feature` most, each followed by its patch map; the
        model and the dataset are read as the visitor may read them (visitor_token)."""
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
            target = self.check_feature(model, layer, feature)
            progress(None, desc=f"Scanning up to {max_images} images of {dataset}")
            found = self._scan_on_device(target, dataset, split, max_images, top_k, token)
            rows = example_rows(model, target.layer, "feature", dataset, {target.features[0]: found})
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


def build(ctx: AppContext) -> Explorer:
    """The "Explore a feature" tab inside the open gr.Tabs, for the shared layer and feature pickers."""
    preset = ctx.preset
    explorer = Explorer(preset, ctx.models, uploads=lambda: ctx.demo.upload_file_set, default_dataset=ctx.default_dataset)
    with gr.Tab("Explore a feature"):
        with gr.Row():
            dataset = gr.Textbox(ctx.default_dataset, label="Dataset (Hub id or local folder)")
            split = gr.Textbox(DEFAULT_SPLIT, label="Split", placeholder="first of test, validation, train")
            max_images = gr.Number(min(200, preset.max_scan_images), precision=0, minimum=1,
                                   maximum=preset.max_scan_images, label="Max images to scan")
            top_k = gr.Slider(1, preset.max_top_k, value=min(8, preset.max_top_k), step=1, label="Top k")
        find = gr.Button("Find top dataset examples", variant="primary")
        examples = gr.Gallery(label="Top examples and their patch maps", columns=4, fit_columns=False, format="png")
        with gr.Row():
            upload = gr.Image(type="pil", label="Your image", sources=["upload", "clipboard"], height=320,
                              elem_id="upload")
            overlay = gr.Image(type="pil", label="Patch activation map", format="png", interactive=False, height=MAP_PX,
                               elem_id="overlay")
            attention = gr.Image(type="pil", label="CLS attention of this block (mean, then each head)", format="png",
                                 interactive=False, height=320, elem_id="cls-attention")
        map_button = gr.Button("Map this image", elem_id="map-image")

    scanning = find.click(
        explorer.examples, [ctx.model_id, ctx.layer, ctx.feature, dataset, split, max_images, top_k, ctx.session],
        [examples, ctx.session], api_name="examples", **ctx.device_job(),
    )
    mapping = map_button.click(explorer.patch_map, [ctx.model_id, ctx.layer, ctx.feature, upload], [overlay],
                               api_name="patch_map", **ctx.device_job())
    attending = map_button.click(explorer.cls_attention, [ctx.model_id, ctx.layer, upload], [attention],
                                 api_name="cls_attention", **ctx.device_job())
    ctx.jobs.extend([scanning, mapping, attending])
    return explorer
