"""The "Analyses" tab: one of the paper's experiments on the loaded model (/analyze), shown as its plot and table
and saved into the visitor's session gallery (analysis/<experiment>/...), so Sharing pushes it with the gallery;
plus the CLIP names of the explored feature where they were computed (/feature_names)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..errors import VizError
from .common import (
    DEFAULT_SPLIT, AppContext, ModelCache, as_int, check_name, inert, on_gpu, over_cap, session_path, user_errors, visitor_token,
)
from .sae_source import SAE_BOX_INFO, sae_objective_or_name

DEFAULT_ANALYSIS_DATASET = "vit-feature-viz/shapes-color"  # built in: works offline with the shapes fixtures
EXPERIMENT_LABELS = {
    "CLS isolation": "cls-isolation",
    "Token pooling (mean / max of patches)": "token-pooling",
    "Per-block CLS": "per-block-cls",
    "Foreground / background (needs boxes or masks)": "foreground-background",
    "Low-pass / high-pass filtering": "frequency",
    "Name CLIP features (this feature)": "clip-names",
    "Name CLIP features (this latent of the SAE in the SAE box)": "clip-names",
    "CLS attention maps of this block (needs boxes or masks)": "cls-attention",
    "Cue conflict: shape bias (needs shape and colour/texture columns)": "cue-conflict",
    "Block removal (each block, its attention or its MLP skipped)": "block-removal",
    "Occlusion (patches dropped: random, object first, background first)": "occlusion",
    "Patch shuffling (tiles of an N x N grid)": "patch-shuffle",
}
SECONDS_PER_IMAGE = 0.05  # ZeroGPU duration estimate: the per-block experiments run the blocks ~L/2 times


class Analyst:
    """/analyze and /feature_names for one hardware preset, on the shared model cache."""

    def __init__(self, preset, models: ModelCache):
        self.preset = preset
        self.models = models
        self._run_on_device = on_gpu(self._run, duration=self._duration)

    def analyze(self, model_id, experiment, dataset, split, max_images, layer, feature, probe_split="", session=None,
                sae="", oauth_token: gr.OAuthToken | None = None, progress=gr.Progress()):
        """/analyze: run `experiment` on the loaded model over at most the preset's image cap; returns the plot,
        the table, a summary and the session gallery folder the results were saved into. The model and the
        dataset are read as the visitor may read them (visitor_token). `probe_split`: for a model without a
        classifier head, fit a linear probe on that split of the dataset first (at most the same image cap). `sae`:
        the SAE box, whose latent `feature` the SAE variant of naming names (as `analyze clip-names --sae`)."""
        with user_errors("running the analysis"):
            token = visitor_token(oauth_token)
            name = EXPERIMENT_LABELS.get(experiment, experiment)
            if name not in EXPERIMENT_LABELS.values():
                raise VizError(f"Unknown experiment '{experiment}': pick one of {', '.join(EXPERIMENT_LABELS)}.")
            dataset = check_name(dataset, "dataset", DEFAULT_ANALYSIS_DATASET)
            split = str(split or "").strip() or None
            cap = self.preset.max_scan_images
            max_images = as_int(max_images if max_images not in (None, "") else cap, "max images", minimum=1)
            if max_images > cap:
                raise over_cap(self.preset, "max dataset images", max_images, cap, "images")
            model = self.models.get(model_id, token=token)
            layer, feature = as_int(layer, "layer"), as_int(feature, "feature", minimum=0)
            if name in ("clip-names", "cls-attention"):
                model.check_layer(layer)
            probe_split = str(probe_split or "").strip() or None
            objective = self.named_objective(experiment, sae, session, layer, token)
            progress(None, desc=f"{experiment} on up to {max_images} images of {dataset}")
            result = self._run_on_device(model.model_id, name, dataset, split, max_images, layer, feature, token,
                                         probe_split, objective)
            session = session_path(session)
            files = result.save(session)
            columns = list(result.rows[0]) if result.rows else []
            table = [[_cell(row.get(c)) for c in columns] for row in result.rows]
            probes = [f"{model} read through a {probe}" for model, probe in result.settings.get("probes", {}).items()]
            return (str(files["plot"]), {"headers": columns, "data": table}, notes_markdown(result.notes + probes),
                    session)

    def named_objective(self, experiment, sae, session, layer, token):
        """What CLIP naming ranks images by: the channel, or for the SAE variant the box's SAE's latent."""
        if experiment != SAE_NAMES_LABEL:
            return "feature"
        return sae_objective_or_name("sae", sae, session, layer, self.preset, token)

    def feature_names(self, model_id, layer, feature, session=None, experiment="", sae="",
                      oauth_token: gr.OAuthToken | None = None) -> str:
        """/feature_names: the CLIP names saved in the session gallery for this feature (with the SAE variant
        of the experiment: for this latent of the SAE box's SAE), or a hint."""
        from ..analysis import feature_names
        from ..analysis.clip_names import has_feature_names

        with user_errors("reading feature names"):
            layer, feature = as_int(layer, "layer"), as_int(feature, "feature", minimum=0)
            model_id = str(model_id or "").strip()
            if experiment == SAE_NAMES_LABEL and not str(sae or "").strip():
                return ""  # no SAE named yet: nothing to look up
            objective = self.named_objective(experiment, sae, session, layer, visitor_token(oauth_token))
            objective = getattr(objective, "name", objective)
            names = feature_names(session, model_id, layer, feature, objective=objective) if session else []
            what = f"feature {feature}" if objective == "feature" else f"latent {feature} of {objective}"
            if names:
                return f"**CLIP names of layer {layer}, {what}:** {', '.join(map(inert, names))}"
            if session and has_feature_names(session, model_id):  # this model was named, this feature not yet
                return f"No CLIP names yet for layer {layer}, feature {feature}: run *Name CLIP features* for it."
            return ""  # nothing named for this model: nothing to say (most models have no text tower)

    def _duration(self, model_id, experiment, dataset, split, max_images, layer, feature, token=None,
                  probe_split=None, objective="feature") -> int:
        images = max_images * (2 if probe_split else 1)
        return int(min(self.preset.max_gpu_seconds, 30 + SECONDS_PER_IMAGE * images))

    def _run(self, model_id, experiment, dataset, split, max_images, layer, feature, token=None, probe_split=None,
             objective="feature"):
        from ..analysis import EXPERIMENTS
        from ..analysis.probe import ProbeRequest

        with user_errors("running the analysis"):
            model = self.models.get(model_id, token=token)
            options = dict(split=split, max_images=max_images, progress=False, token=token)
            if experiment == "cls-attention":
                options["layer"] = layer
            if experiment == "clip-names":
                options.update(layer=layer, features=[feature], top_images=min(16, max_images), objective=objective)
            elif probe_split:
                options["probe"] = ProbeRequest(dataset, probe_split, max_images=max_images, token=token,
                                                progress=False)
            return EXPERIMENTS[experiment](model, dataset, **options)


CLIP_NAMES_LABEL, SAE_NAMES_LABEL = [label for label, name in EXPERIMENT_LABELS.items() if name == "clip-names"]


def experiment_choices(info: dict | None, experiment: Any):
    """The Experiment menu for the model the sliders describe (its /layers structure): naming features with words
    only for a model with a text tower; the others are for every model."""
    if not info:
        return gr.skip()
    labels = [label for label in EXPERIMENT_LABELS
              if label not in (CLIP_NAMES_LABEL, SAE_NAMES_LABEL) or info.get("text_tower")]
    return gr.Dropdown(choices=labels, value=experiment if experiment in labels else labels[0])


def notes_markdown(notes: list[str]) -> str:
    """An analysis' notes as a Markdown list; they quote the dataset's and the model's names, so as text."""
    return "\n".join(f"- {inert(note)}" for note in notes)


def _cell(value):
    return round(value, 3) if isinstance(value, float) else value


def build(ctx: AppContext) -> Analyst:
    """The "Analyses" tab inside the open gr.Tabs, for the shared model box and layer/feature pickers."""
    preset = ctx.preset
    analyst = Analyst(preset, ctx.models)
    with gr.Tab("Analyses"):
        gr.Markdown(
            "Run one of the paper's experiments on the loaded model: accuracy with the CLS token isolated, "
            "from pooled patch tokens, after each block, on foreground- or background-only images, on filtered "
            "images, or name the explored feature of a CLIP model with words. Results are saved with your "
            "gallery (analysis/ folder) and pushed with it. The built-in datasets `vit-feature-viz/shapes-color` "
            "and `vit-feature-viz/shapes-shape` (with boxes) fit the built-in shapes models."
        )
        with gr.Row():
            experiment = gr.Dropdown(list(EXPERIMENT_LABELS), value=next(iter(EXPERIMENT_LABELS)), label="Experiment",
                                     elem_id="analysis-experiment")
            dataset = gr.Textbox(DEFAULT_ANALYSIS_DATASET, label="Labelled dataset (Hub id or local folder)",
                                 elem_id="analysis-dataset")
            split = gr.Textbox(DEFAULT_SPLIT, label="Split", placeholder="first of test, validation, train")
            max_images = gr.Number(min(200, preset.max_scan_images), precision=0, minimum=1,
                                   maximum=preset.max_scan_images, label="Max images")
            probe_split = gr.Textbox("", label="Probe split", placeholder="e.g. train, for models without a head",
                                     info="DINOv2, MAE: fit a linear probe on this split first", elem_id="probe-split")
            sae = gr.Textbox("", label="SAE (gallery)", info=SAE_BOX_INFO, elem_id="analysis-sae")
        run = gr.Button("Run analysis", variant="primary", elem_id="analysis-run")
        with gr.Row():
            # no label and no toolbar over the picture: they covered the plot's title (the PNG is in your gallery)
            plot = gr.Image(type="filepath", label="Plot", show_label=False, buttons=[], format="png",
                            interactive=False, elem_id="analysis-plot")
            with gr.Column():
                summary = gr.Markdown(elem_id="analysis-summary")
                names = gr.Markdown(elem_id="analysis-names")
        table = gr.Dataframe(label="Table (also saved as CSV with the settings)", interactive=False,
                             elem_id="analysis-table")

    running = run.click(
        analyst.analyze, [ctx.model_id, experiment, dataset, split, max_images, ctx.layer, ctx.feature, probe_split,
                          ctx.session, sae],
        [plot, table, summary, ctx.session], api_name="analyze", **ctx.device_job(),
    )
    show_names = dict(fn=analyst.feature_names, inputs=[ctx.model_id, ctx.layer, ctx.feature, ctx.session, experiment,
                                                        sae],
                      outputs=[names], queue=False, preprocess=False)  # checked against the model, not stale bounds
    running.success(**show_names, api_name="feature_names")
    ctx.info.change(experiment_choices, [ctx.info, experiment], [experiment], api_visibility="private", queue=False)
    ctx.feature.release(**show_names, api_visibility="private")
    ctx.jobs.append(running)
    ctx.sae_boxes.append(sae)
    return analyst
