"""ViT Feature Viz as a Gradio app: deployable as a Hugging Face Space as is, or `python app.py` locally.

This file only lays out widgets and wires them to vit_feature_viz.app_logic. The hardware preset (caps per
request, queue concurrency) comes from spaces_config/presets.py via VFV_HARDWARE. Named API endpoints:
/layers, /render, /patch_map, /examples (see the Space README for gradio_client calls).
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
from vit_feature_viz.app_logic import (  # noqa: E402
    DEFAULT_DATASET, DEFAULT_REPO_NAME, DEFAULT_SPLIT, TABLE_HEADERS, WELL_KNOWN_MODELS, AppLogic, on_space,
)
from vit_feature_viz.objectives import OBJECTIVES  # noqa: E402
from vit_feature_viz.recipes import RECIPES  # noqa: E402

INTRO = """# ViT Feature Viz
See what the MLP features of a Vision Transformer respond to: render the images that maximize a feature
(Ghiasi et al. 2022), find the dataset images that activate it most with patch activation maps, and share the
gallery on the Hub. Enter any ViT/CLIP model id from the Hub or pick a well-known one, then **Load**."""


def build_demo(preset=None) -> gr.Blocks:
    preset = preset or current_preset()
    logic = AppLogic(preset)
    show_login = os.environ.get("VFV_OAUTH", "1" if on_space() else "0") == "1"

    # delete_cache: every 30 min, drop files gradio cached for visitors (images, downloads) older than 3 h
    with gr.Blocks(title="ViT Feature Viz", delete_cache=(1800, 3 * 3600)) as demo:
        session = gr.State(None, delete_callback=logic.forget_session)
        gr.Markdown(INTRO)
        gr.Markdown(f"Hardware preset **{preset.caps_text()}**.", elem_id="caps")
        with gr.Row(equal_height=True):
            model_id = gr.Dropdown(WELL_KNOWN_MODELS, value=WELL_KNOWN_MODELS[0], allow_custom_value=True,
                                   label="Model (Hub id)", scale=4, elem_id="model-id")
            load = gr.Button("Load", scale=1, elem_id="load")
            if show_login:
                gr.LoginButton(scale=1)
        summary = gr.Markdown("No model loaded yet: the sliders assume a ViT-B (12 blocks, 3072 features).")
        with gr.Accordion("Model structure (JSON)", open=False):
            info = gr.JSON(label="layers")
        with gr.Row():
            layer = gr.Slider(0, 11, value=5, step=1, label="Layer (block)", elem_id="layer")
            feature = gr.Slider(0, 3071, value=0, step=1, label="Feature (for exploring)", elem_id="feature")

        with gr.Tabs():
            with gr.Tab("Render"):
                with gr.Row():
                    features = gr.Textbox(f"0-{preset.max_features - 1}" if preset.max_features > 1 else "0",
                                          label="Features", info="7 | 0,5,9 | 0-63 | all | random 8",
                                          elem_id="features")
                    objective = gr.Dropdown(list(OBJECTIVES), value="feature", label="Objective")
                    recipe = gr.Dropdown(list(RECIPES), value="paper", label="Recipe")
                with gr.Row():
                    steps = gr.Slider(1, preset.max_steps, value=min(64, preset.max_steps), step=1, label="Steps",
                                      elem_id="steps")
                    image_size = gr.Number(0, precision=0, minimum=0, maximum=preset.max_image_size,
                                           label="Image size (0 = the model's)")
                    seed = gr.Number(0, precision=0, minimum=0, label="Seed")
                with gr.Row():
                    render = gr.Button("Render", variant="primary", elem_id="render")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                gallery = gr.Gallery(label="Rendered features", columns=4, fit_columns=False, format="png",
                                     elem_id="gallery")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Activations", interactive=False)

            with gr.Tab("Explore a feature"):
                with gr.Row():
                    dataset = gr.Textbox(DEFAULT_DATASET, label="Dataset (Hub id or local folder)")
                    split = gr.Textbox(DEFAULT_SPLIT, label="Split")
                    max_images = gr.Number(min(200, preset.max_scan_images), precision=0, minimum=1,
                                           maximum=preset.max_scan_images, label="Max images to scan")
                    top_k = gr.Slider(1, preset.max_top_k, value=min(8, preset.max_top_k), step=1, label="Top k")
                find = gr.Button("Find top dataset examples", variant="primary")
                examples = gr.Gallery(label="Top examples and their patch maps", columns=4, fit_columns=False,
                                      format="png")
                with gr.Row():
                    upload = gr.Image(type="pil", label="Your image", sources=["upload", "clipboard"], height=320,
                                      elem_id="upload")
                    overlay = gr.Image(type="pil", label="Patch activation map", format="png", interactive=False,
                                       height=320)
                map_button = gr.Button("Map this image")

            with gr.Tab("Gallery & sharing"):
                status = gr.Markdown("Your gallery is empty: render some features first.")
                with gr.Row():
                    fmt = gr.Radio(["parquet", "zip"], value="parquet", label="Download as")
                    download = gr.Button("Prepare download")
                file = gr.File(label="Download", interactive=False)
                with gr.Row():
                    repo_name = gr.Textbox(DEFAULT_REPO_NAME, label="Dataset repo (name or you/name)")
                    private = gr.Checkbox(False, label="Private")
                    push = gr.Button("Push to the Hub", variant="primary")
                pushed = gr.Markdown(
                    "Sign in with Hugging Face above to push into your own namespace." if show_login
                    else "Pushes use your local Hugging Face token (HF_TOKEN or `hf auth login`)."
                )

        # --- wiring ---------------------------------------------------------------------------------------
        load.click(logic.layers, [model_id], [info], api_name="layers").success(
            logic.pickers, [info, layer], [layer, feature, summary], api_visibility="private", queue=False)
        layer.release(logic.feature_picker, [info, layer, feature], [feature], api_visibility="private",
                      queue=False)
        # preprocess=False: gradio would check inputs against the sliders' static bounds, which API callers
        # never update; the logic checks every input against the loaded model and the preset's caps instead.
        # The three share one concurrency group: at most preset.concurrency model jobs run at once.
        device = dict(preprocess=False, concurrency_id="device", concurrency_limit=preset.concurrency)
        rendering = render.click(
            logic.render, [model_id, layer, features, objective, recipe, steps, image_size, seed, session],
            [gallery, table, session], api_name="render", show_progress_on=[table], **device,
        )
        scanning = find.click(
            logic.examples, [model_id, layer, feature, dataset, split, max_images, top_k, session],
            [examples, session], api_name="examples", **device,
        )
        mapping = map_button.click(logic.patch_map, [model_id, layer, feature, upload], [overlay],
                                   api_name="patch_map", **device)
        stop.click(None, None, None, cancels=[rendering, scanning, mapping], api_visibility="private")
        for event in (rendering, scanning):
            event.then(logic.gallery_status, [session], [status], api_visibility="private", queue=False)
        download.click(logic.download, [fmt, session], [file], api_visibility="private")
        push.click(logic.push, [repo_name, private, session], [pushed], api_visibility="private")

    demo.queue(default_concurrency_limit=preset.concurrency, max_size=preset.queue_size)
    return demo


demo = build_demo()

if __name__ == "__main__":
    # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are read by launch(); on a Space they are set for us.
    demo.launch(max_file_size="20mb")
