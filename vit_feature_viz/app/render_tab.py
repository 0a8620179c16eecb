"""The Render tab: optimize images that maximize features (/render), streaming previews while it runs.

GPU work runs inside `@spaces.GPU` on ZeroGPU with a duration computed from the request; without the `spaces`
package it runs as is.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator

import gradio as gr

from ..core.pace import Pace
from .common import (
    AppContext, ModelCache, add_rows, as_int, feature_spec, on_gpu, over_cap, session_path, user_errors,
    visitor_token,
)
from .sae_source import SAE_BOX_INFO, sae_objective_or_name

TABLE_HEADERS = ["feature", "activation", "activation_init"]
UPDATE_S = 1.0  # a running render yields about this often: previews, and the points where a Stop lands
HEARTBEAT_S = 0.5  # the device side reports at least this often, even between slow steps


class Renderer:
    """/render for one hardware preset (see spaces_config/presets.py), on the shared model cache."""

    def __init__(self, preset, models: ModelCache):
        self.preset = preset
        self.models = models
        self._render_on_device = on_gpu(self._render_stream, duration=self._render_duration)

    def plan(self, model_id, layer, features, objective, recipe, steps, image_size, seed, token=None, *,
             direction_file=None, direction=None, cosine=False, negative=False, diversity=1, prompt=None,
             negative_prompt=None, sae=None, session=None):
        """Check a render request once: the library's planner checks it against the model, and only the caps
        are the app's own; returns (model, plan). `token` reads the model (visitor_token). A direction is an
        uploaded vector file (`direction`: its tensor's key) or two features typed as A-B. A prompt (one a line)
        renders every prompt, whatever Features says. `sae`: the SAE box, read (with `token`, within the preset's
        cap) for the sae objectives only (app/sae_source.py)."""
        from ..core.prompts import prompt_lines, site_layer
        from ..core.render import plan_render
        from ..core.requested import requested_objective

        preset = self.preset
        steps = as_int(steps, "steps", minimum=1)
        if steps > preset.max_steps:
            raise over_cap(preset, "max steps", steps, preset.max_steps, "steps")
        size = as_int(image_size if image_size not in (None, "") else 0, "image size", minimum=0)
        diversity = as_int(diversity if diversity not in (None, "") else 1, "diversity", minimum=1)
        layer = as_int(layer, "layer", minimum=0)
        objective = sae_objective_or_name(objective, sae, session, layer, preset, token)
        objective = requested_objective(objective, layer,
                                   direction=direction_source(direction_file, direction), cosine=bool(cosine),
                                   negative=bool(negative), prompt=prompt_lines(prompt),
                                   negative_prompt=str(negative_prompt or "").strip() or None)
        model = self.models.get(model_id, token=token)
        if prompt_lines(prompt):
            features, layer = "all", site_layer(objective, model, layer)
        plan = plan_render(model, layer, feature_spec(features), objective=objective, recipe=recipe, steps=steps,
                           image_size=size or None, seed=seed if seed not in (None, "") else 0,
                           max_features=preset.max_features, diversity=diversity)
        if len(plan.features) * plan.diversity > preset.max_features:
            raise over_cap(preset, "max features, counting each image of a diverse set",
                           len(plan.features) * plan.diversity, preset.max_features, "images")
        if plan.image_size > preset.max_image_size:
            raise over_cap(preset, "max image size", plan.image_size, preset.max_image_size, "px")
        return model, plan

    def render(self, model_id, layer, features, objective, recipe, steps, image_size, seed, direction_file=None,
               direction=None, cosine=False, negative=False, diversity=1, prompt=None, negative_prompt=None,
               session=None, sae="", oauth_token: gr.OAuthToken | None = None,
               progress=gr.Progress()) -> Iterator[tuple]:
        """/render: stream previews while optimizing, then (gallery, activation table).

        Each batch of features goes into the session gallery as soon as it finishes, so a Stop, a closed tab or
        an error in a later batch never loses the features already rendered. The session folder is handed to
        gradio (the first yield) before any work starts, so the session state points at it whatever happens next.
        """
        with user_errors("rendering"):
            progress(None, desc=f"Loading {str(model_id or '').strip()}…")  # the first load reads the weights
            token = visitor_token(oauth_token)
            model, plan = self.plan(model_id, layer, features, objective, recipe, steps, image_size, seed, token,
                                    direction_file=direction_file, direction=direction, cosine=cosine,
                                    negative=negative, diversity=diversity, prompt=prompt,
                                    negative_prompt=negative_prompt, sae=sae, session=session)
            session = session_path(session)
            yield gr.skip(), gr.skip(), session
            names = self._class_names(model, plan)
            total = plan.steps * len(plan.features)
            progress((0, total), desc="Starting", unit="feature-steps")
            results = []
            stream = self._render_on_device(plan, token)
            previews: dict = {}  # feature -> latest image of the features being optimized
            pace = Pace(total)  # time left from the measured steps, the first ones' warm-up left out
            shown = time.monotonic()
            changed = batch_done = False
            with contextlib.closing(stream):
                for event in stream:
                    if event[0] == "step":  # not a tick
                        _, done, images, finished, rows = event
                        if rows:  # saved now, not at the end: a Stop closes this generator at its next yield
                            add_rows(session, rows, model.backend)
                            batch_done = True
                        results.extend(finished)
                        previews.update(images)
                        for result in finished:
                            previews.pop(result.feature, None)
                        changed = True
                        pace.update(done)
                        progress((done, total), unit="feature-steps", desc=progress_text(pace, len(results),
                                                                                         len(plan.features)))
                    # Yield (the points where a Stop can close this generator) about every UPDATE_S, not more
                    # often: each yield hides the progress bar until the next progress message. A finished batch
                    # is shown at once.
                    if batch_done or time.monotonic() - shown >= UPDATE_S:
                        shown, batch_done = time.monotonic(), False
                        gallery = self._gallery(results, previews, names) if changed else gr.skip()
                        yield gallery, gr.skip(), gr.skip()
                        changed = False
            yield self._gallery(results, {}, names), self._table(results), session

    @staticmethod
    def _class_names(model, plan) -> dict[int, str]:
        """Class names (id2label and the like) of the rendered logits, for the captions; empty for other objectives."""
        from ..models import LOGITS
        from ..models.classifiers import class_names

        if getattr(plan.objective, "kind", None) != LOGITS:
            return {}
        labels = class_names(model)
        return {f: labels[f] for f in plan.features}

    def _render_duration(self, plan, token=None) -> int:
        return self.preset.gpu_duration(len(plan.features) * plan.diversity, plan.steps)

    def _render_stream(self, plan, token=None):
        """On the device: render the plan as it was checked, in a thread, and yield ('tick',) or ('step', done,
        previews, finished, rows); `rows` are the finished features' gallery rows with their patch maps, as the
        CLI writes them."""
        from ..core.render import render_planned
        from ..jobs import with_patch_map

        with user_errors("rendering"):
            model = self.models.get(plan.model_id, token=token)
            events: queue.Queue = queue.Queue()
            stop = threading.Event()
            progress_by_feature: dict[int, int] = {}

            def on_step(step, images):
                if stop.is_set():
                    raise _Cancelled
                progress_by_feature.update(dict.fromkeys(images, step))
                events.put(("step", sum(progress_by_feature.values()), images, [], []))

            def work():
                try:
                    for batch in render_planned(model, plan, progress=False, callback=on_step,
                                                callback_every=max(1, min(plan.steps // 20, 5))):
                        progress_by_feature.update({r.feature: plan.steps for r in batch})
                        rows = [with_patch_map(model, r.to_row(), plan.objective) for r in batch]
                        events.put(("step", sum(progress_by_feature.values()), {}, batch, rows))
                    events.put(("done",))
                except _Cancelled:
                    events.put(("done",))
                except BaseException as err:  # handed to the consumer, which raises it in the request
                    events.put(("error", err))

            threading.Thread(target=work, name="vfv-render", daemon=True).start()
            try:
                while True:
                    try:
                        event = events.get(timeout=HEARTBEAT_S)
                    except queue.Empty:
                        yield ("tick",)
                        continue
                    if event[0] == "done":
                        return
                    if event[0] == "error":
                        raise event[1]
                    yield event
            finally:
                stop.set()  # a Stop or a closed tab closes this generator: the worker ends at its next step

    @staticmethod
    def _gallery(results, previews: dict, names: dict[int, str]) -> list[tuple]:
        def title(feature):
            return f"class {feature} ({names[feature]})" if feature in names else f"feature {feature}"

        done = [(r.image, f"{title(r.feature)}{'' if r.objective in PLAIN else ' · ' + r.objective} · "
                          f"activation {r.activation:.3f} (start {r.activation_init:.3f})") for r in results]
        return done + [(image, f"{title(f)} · rendering…") for f, image in previews.items()]

    @staticmethod
    def _table(results) -> list[list]:
        return [[r.feature, round(r.activation, 6), round(r.activation_init, 6)] for r in results]


def progress_text(pace: Pace, finished: int, features: int) -> str:
    """The status line: feature-steps done (they move within a batch, where finished features would not), the
    features finished, and the time left."""
    return f"{pace.done}/{pace.total} feature-steps · {finished}/{features} features finished · {pace.text()}"


def direction_source(upload, text) -> str | None:
    """The direction a Render request names, as the library reads it: an uploaded .npy/.safetensors file (the
    text is then its tensor's key), or two features typed as A-B (the first minus the second); None for none."""
    text = str(text or "").strip()
    if upload:
        path = str(upload.get("path") if isinstance(upload, dict) else getattr(upload, "path", upload))
        return f"{path}:{text}" if text else path
    if not text:
        return None
    first, dash, second = text.replace(" ", "").partition("-")
    return f"difference:{first},{second}" if dash else f"difference:{text}"


def prompt_box(info: dict | None):
    """The prompt row is offered when the model in the sliders has a text tower (/layers says `text_tower`)."""
    return gr.Row(visible=bool(info and info.get("text_tower")))


PLAIN = {"feature", "neuron", "cls", "residual", "logit"}  # objective names shown without a suffix in captions


class _Cancelled(Exception):
    """Raised from the render callback once the request is gone (Stop, closed tab)."""


OBJECTIVE_HELP = ("What to maximize. feature: an MLP unit over all patches (the paper's) · neuron: at one patch · "
                  "cls: at the CLS token · residual: a channel of the block's output · logit: a class of a classifier · "
                  "prompt: a CLIP's text prompt (image embedding) · prompt-cls: the prompt at this block's CLS · "
                  "sae, sae-neuron, sae-cls: a latent of the SAE in the SAE box")
RECIPE_HELP = ("How the image is made. fast: Fourier image, 2 copies, the saved image polished in the second half · "
               "paper: pixels with jitter (Ghiasi et al.) · fourier: Lucid's 1/f image · "
               "maco: phase only, with a natural spectrum · tuned: Fourier at the paper's compute, one un-augmented copy · "
               "fast-std: fast's budget, photo contrast by construction")


def objective_choices(sae) -> list[str]:
    """The objectives the Render tab offers: the sae ones only once the SAE box names an SAE."""
    from ..core.objectives import OBJECTIVES
    from ..core.registries import SAE_OBJECTIVES

    given = bool(str(sae or "").strip())
    return [name for name in OBJECTIVES if given or name not in SAE_OBJECTIVES]


def offered_objectives(sae, objective):
    """The Objective menu for the SAE box's value: the sae objectives appear with an SAE and go with it."""
    choices = objective_choices(sae)
    return gr.Dropdown(choices=choices, value=objective if objective in choices else "feature")


def preset_defaults(preset) -> tuple[str, int]:
    """(recipe, steps) the Render tab starts with: the preset's, chosen by benchmarks/bench_speed.py for its hardware,
    else the library's default recipe at its own steps; never above the preset's step cap."""
    from ..core.recipes import DEFAULT_RECIPE, get_recipe

    recipe = get_recipe(getattr(preset, "default_recipe", None) or DEFAULT_RECIPE)
    steps = getattr(preset, "default_steps", None) or recipe.steps
    return recipe.name, min(steps, preset.max_steps)


def build(ctx: AppContext) -> Renderer:
    """The Render tab inside the open gr.Tabs: settings with examples, Render/Stop, progress, the gallery and the
    activations table. Render is disabled while its job runs (a Stop gives it back at once)."""
    from ..core.recipes import RECIPES

    preset = ctx.preset
    renderer = Renderer(preset, ctx.models)
    default_recipe, default_steps = preset_defaults(preset)
    with gr.Tab("Render"):
        with gr.Row():
            features = gr.Textbox(f"0-{preset.max_features - 1}" if preset.max_features > 1 else "0",
                                  label="Features", info="7 | 0,5,9 | 0-63 | all | random 8", elem_id="features")
            objective = gr.Dropdown(objective_choices(""), value="feature", label="Objective", info=OBJECTIVE_HELP,
                                    elem_id="objective")
            recipe = gr.Dropdown(list(RECIPES), value=default_recipe, label="Recipe", info=RECIPE_HELP, elem_id="recipe")
        with gr.Row():
            steps = gr.Slider(1, preset.max_steps, value=default_steps, step=1, precision=0, label="Steps",
                              elem_id="steps")
            image_size = gr.Number(0, precision=0, minimum=0, maximum=preset.max_image_size,
                                   label="Image size (0 = the model's)")
            seed = gr.Number(0, precision=0, minimum=0, label="Seed")
            sae = gr.Textbox("", label="SAE (gallery)", info=SAE_BOX_INFO, elem_id="render-sae")
        with gr.Accordion("Direction, negative, diversity", open=False, elem_id="render-more"):
            with gr.Row():
                direction_file = gr.File(label="Direction file (.npy or .safetensors)", file_types=[".npy", ".safetensors"],
                                         type="filepath", elem_id="direction-file")
                direction = gr.Textbox("", label="Direction: two features A-B, or the file's tensor key",
                                       info="12-40: feature 12 minus feature 40; with a file, Features picks its rows",
                                       elem_id="direction")
            with gr.Row():
                cosine = gr.Checkbox(False, label="Cosine (not projection) with the direction", elem_id="cosine")
                negative = gr.Checkbox(False, label="Negative: drive it most negative", elem_id="negative")
                diversity = gr.Slider(1, max(1, min(8, preset.max_features)), value=1, step=1, precision=0,
                                      label="Diversity: images per feature", elem_id="diversity")
        with gr.Row(visible=False, elem_id="prompt-row") as prompt_row:  # shown for a model with a text tower
            prompt = gr.Textbox("", label="Text prompt (CLIP): one a line", lines=1, max_lines=8,
                                info="render what the model pictures for it; each line is one image", elem_id="prompt")
            negative_prompt = gr.Textbox("", label="Negative prompt", info="its cosine is subtracted",
                                         elem_id="negative-prompt")
        ctx.info.change(prompt_box, ctx.info, prompt_row, api_visibility="private", queue=False)
        gr.Examples(
            [["0", "feature", "paper", default_steps], ["random 2", "feature", "fourier", default_steps],
             ["0", "logit", "paper", default_steps], ["5", "cls", "maco", default_steps]],
            [features, objective, recipe, steps], label="Try these settings", elem_id="render-examples",
        )
        with gr.Row():
            render = gr.Button("Render", variant="primary", elem_id="render")
            stop = gr.Button("Stop", variant="stop", elem_id="stop")
            explore = gr.Button("Open in Explore", elem_id="open-in-explore")  # the session gallery, in Explore
        status = gr.Markdown(elem_id="render-status", min_height=48)  # where the progress bar is drawn
        gallery = gr.Gallery(label="Rendered features", columns=4, fit_columns=False, format="png", elem_id="gallery")
        table = gr.Dataframe(headers=TABLE_HEADERS, label="Activations", interactive=False, elem_id="activations")

    private = dict(api_visibility="private", queue=False)
    started = render.click(lambda: gr.Button(interactive=False), None, [render], **private)
    rendering = started.then(
        renderer.render,
        [ctx.model_id, ctx.layer, features, objective, recipe, steps, image_size, seed, direction_file, direction,
         cosine, negative, diversity, prompt, negative_prompt, ctx.session, sae],
        [gallery, table, ctx.session], api_name="render", show_progress_on=[status], **ctx.device_job(),
    )
    rendering.then(lambda: gr.Button(interactive=True), None, [render], **private)
    sae.change(offered_objectives, [sae, objective], [objective], **private)
    ctx.sae_boxes.append(sae)
    ctx.refresh_structure(rendering)
    stop.click(lambda: gr.Button(interactive=True), None, [render], **private)
    if ctx.open_in_explore is not None:
        ctx.open_in_explore(explore)
    ctx.jobs.append(rendering)
    ctx.stop_buttons.append(stop)
    return renderer
