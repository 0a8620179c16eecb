"""ViT Feature Viz as a Gradio app: deployable as a Hugging Face Space as is, or `python app.py` locally.

This file only builds the header and the shared controls, then lets each tab of vit_feature_viz/app/ lay
itself out. The hardware preset (caps per request, queue concurrency) comes from spaces_config/presets.py via
VFV_HARDWARE. Named API endpoints: /layers, /render, /patch_map, /examples, and the gallery browser's
/open_gallery, /show_layer, /feature_page, /compare (see the Space README for gradio_client calls).
"""

try:  # on ZeroGPU `spaces` must be imported before torch; elsewhere it is absent and nothing changes
    import spaces  # noqa: F401
except ImportError:
    pass

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # spaces_config/ and vit_feature_viz/ beside this file

import gradio as gr  # noqa: E402

from spaces_config.presets import current_preset  # noqa: E402
from vit_feature_viz.app import analysis_tab, explore_tab, galleries_tab, render_tab, sae_tab, sharing_tab  # noqa: E402
from vit_feature_viz.app.common import (  # noqa: E402
    DEFAULT_DATASET, WELL_KNOWN_MODELS, AppContext, ModelCache, feature_picker, forget_session, load_failed,
    PAGE_STYLE, loading_message, on_space, pickers, restore_session, structure_reader,
)
from vit_feature_viz.app.served_images import serve_images_atomically  # noqa: E402
from vit_feature_viz.image_datasets import DEFAULT_BUILTIN_DATASET  # noqa: E402
from vit_feature_viz.models.builtin import DEFAULT_BUILTIN, SHAPES_CLIP, default_model_id  # noqa: E402

INTRO = """# ViT Feature Viz
See what the MLP features of a Vision Transformer respond to: render the images that maximize a feature
(Ghiasi et al. 2022), find the dataset images that activate it most with patch activation maps, and share the
gallery on the Hub. Enter any ViT/CLIP model id from the Hub or pick a well-known one, then **Load**."""
# each lays out its own tab: build(ctx); browsing galleries comes first, as it shows something at once
TABS = (galleries_tab, render_tab, explore_tab, analysis_tab, sae_tab, sharing_tab)


def build_demo(preset=None) -> gr.Blocks:
    preset = preset or current_preset()
    serve_images_atomically()  # before any output is cached: see served_images.py
    models = ModelCache(max_parameters=preset.max_parameters)
    show_login = os.environ.get("VFV_OAUTH", "1" if on_space() else "0") == "1"
    default_model, notice = default_model_id(WELL_KNOWN_MODELS[0])  # the built-in one when the Hub is unreachable

    # delete_cache: every 30 min, drop files gradio cached for visitors (images, downloads) older than 3 h
    with gr.Blocks(title="ViT Feature Viz", delete_cache=(1800, 3 * 3600)) as demo:
        session = gr.State(None, delete_callback=forget_session)  # the session gallery's folder, server side
        session_key = gr.BrowserState(None, storage_key="vfv-session")  # this browser's key to it: kept on reload
        gr.Markdown(INTRO)
        gr.HTML("", head=PAGE_STYLE, container=False, padding=False, visible="hidden", elem_id="page-style")
        gr.Markdown(f"Hardware preset **{preset.caps_text()}**.", elem_id="caps")
        with gr.Row(equal_height=True):  # min widths: on a phone the row wraps instead of cutting the model box
            model_id = gr.Textbox(default_model, label="Model (Hub id)", placeholder="org/name", scale=4,
                                  min_width=240, elem_id="model-id")
            load = gr.Button("Load", scale=1, min_width=80, elem_id="load")
            if show_login:
                gr.LoginButton(scale=1, min_width=160)
        summary = gr.Markdown((f"{notice} " if notice else "")
                              + "No model loaded yet: the sliders assume a ViT-B (12 blocks, 3072 features).",
                              elem_id="model-summary", min_height=40)
        with gr.Accordion("Model structure (JSON)", open=False):
            info = gr.JSON(label="layers")
        with gr.Row():
            layer = gr.Slider(0, 11, value=5, step=1, precision=0, label="Layer (block)", elem_id="layer")
            feature = gr.Slider(0, 3071, value=0, step=1, precision=0, label="Feature (for exploring)",
                                elem_id="feature")
        gr.Examples([[name] for name in [*WELL_KNOWN_MODELS, DEFAULT_BUILTIN, SHAPES_CLIP]], [model_id],  # built-ins: no network
                    label="Well-known models: pick one, then Load",
                    elem_id="model-examples")

        private = dict(api_visibility="private", queue=False)
        # preprocess=False where a slider is an input: gradio would check its value against the bounds it last
        # sent this session, and two structure reads racing (page load, model box change) leave a value the
        # newer bounds reject ("Value 5 is greater than maximum value 3"), so the slider keeps a layer the model
        # lacks. These handlers clamp the value themselves.
        sliders_in = dict(private, preprocess=False)
        loading = gr.on([load.click, model_id.submit], loading_message, [model_id], [summary], **private)
        loaded = loading.then(models.layers, [model_id], [info], api_name="layers", show_progress_on=[summary])
        loaded.success(pickers, [info, layer], [layer, feature, summary], **sliders_in)
        loaded.failure(load_failed, [model_id], [summary], **private)
        layer.release(feature_picker, [info, layer, feature], [feature], **sliders_in)
        reads = dict(inputs=[model_id, layer], outputs=[info, layer, feature, summary], **sliders_in)  # no download: no Load
        demo.load(structure_reader(models, at_start=True), **reads)
        demo.load(restore_session, [session_key, session], [session, session_key], **private)
        model_id.change(structure_reader(models), **reads)

        ctx = AppContext(preset=preset, models=models, demo=demo, show_login=show_login, model_id=model_id,
                         info=info, layer=layer, feature=feature, session=session, summary=summary,
                         default_dataset=DEFAULT_BUILTIN_DATASET if notice else DEFAULT_DATASET)
        with gr.Tabs() as ctx.tabs:
            for tab in TABS:
                tab.build(ctx)
        ctx.wire_stop_buttons()

    demo.queue(default_concurrency_limit=preset.concurrency, max_size=preset.queue_size)
    return demo


demo = build_demo()

if __name__ == "__main__":
    # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are read by launch(); on a Space they are set for us.
    demo.launch(max_file_size="20mb")
