"""The optimization loop: many features at once, each with its own image, randomness and augmentations.

A feature's randomness comes only from a generator seeded by (seed, layer, feature) and its loss is summed, not
averaged, over the batch, so its image is the same whichever batch or process renders it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import VizError
from ..images import to_pil
from ..models import VisionModel, load_model
from ..specs import parse_features, whole_number
from .diversity import MAX_DIVERSITY, Repulsion, diversity_plan, facet_name
from .objectives import Objective, make_objective
from .registries import PARAMETRIZATIONS, RECIPES
from .recipes import DEFAULT_RECIPE, Recipe, get_recipe
from .transforms import CleanFirstCopy, total_variation

MAX_SEED, MAX_INT32 = 2**63 - 1, 2**31 - 1  # what the gallery's seed (int64) and steps (int32) columns hold
IMAGES_PER_BATCH = {"cpu": 8, "cuda": 256}  # on this kind of CPU batches beyond 8 images are no faster per image


@dataclass
class RenderResult:
    """One rendered feature: the image and the objective before and after optimization."""

    model_id: str
    layer: int
    feature: int
    objective: str
    recipe: str
    steps: int
    seed: int
    image_size: int
    image: Image.Image
    activation: float
    activation_init: float
    steps_run: int = 0  # steps actually taken (fewer than `steps` when the objective plateaued); not a gallery column

    def to_row(self) -> dict:
        """The gallery row (see gallery.FEATURES)."""
        row = dict(self.__dict__)
        del row["steps_run"]
        return row


def feature_seed(seed: int, layer: int, feature: int, facet: int = 0) -> int:
    """A stable 63-bit seed for one feature (and one facet of a diverse set; facet 0 is the plain image's seed):
    independent of batch, process and Python's hash salt."""
    digest = hashlib.sha256((f"{seed}:{layer}:{feature}" + (f":{facet}" if facet else "")).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def render(model, layer: int | None = None, features=None, *, plan: RenderPlan | None = None,
           **options) -> list[RenderResult]:
    """Render the images that maximize `features` of `layer`, or a `plan` from `plan_render` as it is; see
    `render_batches` for the options."""
    if plan is None:
        batches = render_batches(model, layer, features, **options)
    else:
        batches = render_planned(model if isinstance(model, VisionModel) else load_model(model), plan, **options)
    return [result for batch in batches for result in batch]


def render_batches(
    model: VisionModel | str,
    layer: int,
    features,
    *,
    objective: str | Objective = "feature",
    recipe: str | Recipe = DEFAULT_RECIPE,
    steps: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
    callback: Callable[[int, dict[int, Image.Image]], None] | None = None,
    callback_every: int | None = None,
    diversity: int = 1,
    diversity_weight: float | None = None,
) -> Iterator[list[RenderResult]]:
    """Yield results batch by batch, so callers can save finished features before the next batch starts: the
    settings are planned (checked) once here, then `render_planned` runs the plan.

    batch_size: features optimized together (each has `recipe.copies` images); default fills ~8 images on CPU.
    callback(step, {feature: image}): called every `callback_every` steps with the current images; it may raise
    to cancel.
    diversity: N images per feature pushed apart (see core/diversity.py), saved as the objective's facets.
    """
    model = model if isinstance(model, VisionModel) else load_model(model)
    plan = plan_render(model, layer, features, objective=objective, recipe=recipe, steps=steps,
                       image_size=image_size, batch_size=batch_size, seed=seed, diversity=diversity,
                       diversity_weight=diversity_weight)
    yield from render_planned(model, plan, progress=progress, callback=callback, callback_every=callback_every)


def render_planned(
    model: VisionModel,
    plan: RenderPlan,
    *,
    progress: bool = True,
    callback: Callable[[int, dict[int, Image.Image]], None] | None = None,
    callback_every: int | None = None,
) -> Iterator[list[RenderResult]]:
    """Yield the results of a plan batch by batch, trusting it: it was checked against this model when it was
    made, so nothing is checked twice. A batch that runs out of memory is retried at half the size."""
    from tqdm.auto import tqdm

    _check_same_model(model, plan)
    total = plan.steps * len(plan.features)
    every = callback_every or max(1, plan.steps // 20)
    with tqdm(total=total, disable=not progress, desc=f"layer {plan.layer}", unit="feature-step") as bar:
        start, size = 0, plan.batch_size
        while start < len(plan.features):
            chunk, done = list(plan.features[start : start + size]), bar.n
            try:
                results = _render_chunk(model, plan, chunk, plan.seed, bar, callback, every)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                if size == 1:
                    raise VizError(f"Out of memory with a single feature per batch on {model.device}",
                                   option="image_size", fix="use a smaller {option}, a smaller model or a device "
                                                            "with more memory.") from None
                size = max(1, size // 2)
                _free_memory(model.device)
                bar.n = done  # the failed batch's steps are done again
                print(f"Out of memory with {len(chunk)} features per batch: continuing with {size}.", file=sys.stderr)
                continue
            start += len(chunk)
            yield results


def _check_same_model(model: VisionModel, plan: RenderPlan) -> None:
    """A plan holds for the model it was checked against (its widths, layers and input size), not for another."""
    if model.model_id != plan.model_id:
        raise VizError(f"This render plan was made for {plan.model_id}, not {model.model_id}: plan it for this model.")


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or a CPU allocation that failed (PyTorch's allocator, or oneDNN, which reports a
    failed allocation as a primitive it could not create)."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        sign in text for sign in ("out of memory", "can't allocate memory", "could not create a primitive")
    )


def _free_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def estimate_seconds(model: VisionModel, layer: int, features, *, processes: int = 1, **options) -> float:
    """Seconds a render of `features` would take, from timing real steps on the first batch.

    Runs three steps of the first batch and times the last two (the first pays one-time costs), then scales
    to every step of every batch, shared by `processes`. Takes about three steps of one batch.
    """
    import time

    model = model if isinstance(model, VisionModel) else load_model(model)
    plan = plan_render(model, layer, features, **options)
    if not plan.features or not plan.steps:
        return 0.0
    stamps: list[float] = []
    probe = dataclasses.replace(plan, features=plan.features[: plan.batch_size], steps=min(3, plan.steps))
    start = time.perf_counter()
    next(render_planned(model, probe, progress=False, callback_every=1,
                        callback=lambda step, images: stamps.append(time.perf_counter())))
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else stamps[0] - start
    batches = math.ceil(len(plan.features) / plan.batch_size)
    return per_step * plan.steps * math.ceil(batches / max(1, processes))


@dataclass(frozen=True)
class RenderPlan:
    """A validated request for one model: everything is checked before the first step, so bad input fails fast,
    and once, so the renderer, the jobs and the app's device workers take it as it is. It pickles (a built-in
    recipe goes by its name), so it crosses into another process."""

    model_id: str
    layer: int
    features: tuple[int, ...]
    objective: Objective
    recipe: Recipe
    steps: int
    image_size: int
    canvas: int
    batch_size: int
    seed: int
    diversity: int = 1  # images per feature, pushed apart (see core/diversity.py); 1: the plain image
    diversity_weight: float = 0.0

    def objective_names(self) -> list[str]:
        """The objective each image of a feature is saved under: one name, or one per facet of a diverse set."""
        return [facet_name(self.objective.name, k, self.diversity) for k in range(self.diversity)]

    def __reduce__(self):
        state = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        if self.recipe.name in RECIPES and RECIPES.get(self.recipe.name) is self.recipe:  # built-ins hold lambdas
            state["recipe"] = self.recipe.name
        return _plan_from_state, (state,)


def _plan_from_state(state: dict) -> RenderPlan:
    """Unpickles a RenderPlan (see RenderPlan.__reduce__)."""
    return RenderPlan(**{**state, "recipe": get_recipe(state["recipe"])})


def plan_render(model: VisionModel, layer, features, *, objective: str | Objective = "feature",
                recipe: str | Recipe = DEFAULT_RECIPE, steps=None, image_size=None, batch_size=None, seed=0,
                max_features: int | None = None, diversity=1, diversity_weight=None) -> RenderPlan:
    """Every setting checked (whole numbers, ranges the gallery can store) before the first step.

    max_features: the most features one request may ask for (the app's cap), checked before any list is built.
    diversity: N images per feature that differ from each other (`diversity_weight`: the repulsion's weight,
    default DIVERSITY_WEIGHT)."""
    layer = whole_number(layer, "layer")
    model.check_layer(layer)
    seed = whole_number(seed, "seed", minimum=0, maximum=MAX_SEED)
    objective = make_objective(objective, layer)
    objective.check(model)
    features = parse_features(features, objective.num_channels(model), seed, max_count=max_features)
    recipe = get_recipe(recipe)
    diversity = whole_number(diversity, "diversity", minimum=1, maximum=MAX_DIVERSITY)
    weight = diversity_plan(objective, recipe, diversity, diversity_weight)
    steps = recipe.steps if steps is None else whole_number(steps, "steps", minimum=0, maximum=MAX_INT32)
    size = model.check_image_size(None if image_size is None else whole_number(image_size, "image size", minimum=1))
    if batch_size is None:
        batch_size = max(1, IMAGES_PER_BATCH.get(model.device.type, 8) // (recipe.copies * diversity))
    batch_size = whole_number(batch_size, "batch size", minimum=1)
    return RenderPlan(model.model_id, layer, tuple(features), objective, recipe, steps, size, recipe.canvas_size(size),
                      batch_size, seed, diversity, weight)


def _render_chunk(model, plan: RenderPlan, features, seed, bar, callback, every) -> list[RenderResult]:
    recipe, device, facets = plan.recipe, model.device, plan.diversity
    chunk = [f for f in features for _ in range(facets)]  # one image per facet: a feature's facets side by side
    generators = [torch.Generator().manual_seed(feature_seed(seed, plan.layer, f, k % facets))
                  for k, f in enumerate(chunk)]
    options = recipe.param_options(plan.canvas, model.patch_size)
    param = PARAMETRIZATIONS.get(recipe.parametrization)(len(chunk), plan.canvas, generators, **options).to(device)
    channels = torch.tensor(chunk, device=device)
    repel = Repulsion(plan.objective, facets, plan.diversity_weight) if facets > 1 else None
    augment = recipe.build_transforms(plan.canvas, plan.image_size)
    view_side = None if recipe.view_frac == 1.0 else int(round(plan.canvas * recipe.view_frac))
    augment_clean = CleanFirstCopy(augment, plan.image_size, view_side)
    optimizer = _optimizer(recipe, param.parameters(), recipe.learning_rate(model.is_clip))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, (lambda s: 0.5 * (1 + math.cos(math.pi * s / max(plan.steps, 1)))) if recipe.cosine else (lambda s: 1.0)
    )
    with torch.no_grad():
        initial = _score(model, plan, recipe.view(param()), channels)
    watch = PlateauWatch(recipe.plateau, len(chunk), plan.steps, param)
    steps_run = [plan.steps] * len(chunk)
    for step in range(plan.steps):
        active = watch.active
        if not active:
            break
        phase = recipe.phase_at(step, plan.steps)
        copies = phase.copies
        images = param()
        if len(active) < len(chunk):
            images = images[torch.tensor(active, device=images.device)]
        transform = augment_clean if phase.clean else augment
        images = transform(images.repeat_interleave(copies, 0), [generators[i] for i in active], copies, step, plan.steps)
        images = _at_scale(images, model.patch_size, phase.scale if model.can_interpolate else 1.0)
        acts = model.activations(images, plan.objective.needs)
        score = plan.objective(acts, channels[active].repeat_interleave(copies)).float().view(len(active), copies).mean(1)
        loss = -score.sum()
        if repel is not None:
            loss = loss + repel(acts, len(features), copies)
        if recipe.tv_weight:
            loss = loss + recipe.tv_weight * total_variation(images).view(len(active), copies).mean(1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        param.after_step()
        for i in watch.update(step, active, score.detach()):
            steps_run[i] = step + 1
        bar.update(len(active) // facets)
        if callback is not None and ((step + 1) % every == 0 or step + 1 == plan.steps):
            with torch.no_grad():
                callback(step + 1, {f: to_pil(img) for f, img in zip(chunk[::facets], recipe.view(param())[::facets])})
    bar.update(sum(plan.steps - n for n in steps_run) // facets)  # features stopped early count as done
    with torch.no_grad():
        final_images = recipe.view(param())
        final = _score(model, plan, final_images, channels)
    names = plan.objective_names()
    return [
        RenderResult(
            model_id=model.model_id, layer=plan.layer, feature=f, objective=names[k % facets], recipe=recipe.name,
            steps=plan.steps, seed=seed, image_size=plan.image_size, image=to_pil(img),
            activation=float(a), activation_init=float(a0), steps_run=n,
        )
        for k, (f, n, img, a, a0) in enumerate(zip(chunk, steps_run, final_images, final.tolist(), initial.tolist()))
    ]


class PlateauWatch:
    """Which features are still optimized. A feature whose objective has plateaued (see recipes.Plateau) stops:
    its parameters are kept as they were at that step (the optimizer's momentum would otherwise move them)."""

    def __init__(self, plateau, num_features: int, steps: int, param: torch.nn.Module):
        self.plateau, self.steps, self.param = plateau, steps, param
        self.active = list(range(num_features))
        self.average = torch.zeros(num_features)
        self.history: deque[torch.Tensor] = deque(maxlen=(plateau.patience + 1) if plateau else 1)
        self.first: torch.Tensor | None = None
        self.stopped = torch.zeros(num_features, dtype=torch.bool)
        self.kept = [value.detach().clone() for value in param.parameters()] if plateau else []

    def update(self, step: int, active: list[int], score: torch.Tensor) -> list[int]:
        """Record this step's objective of the active features; return the features that stop now."""
        self._restore()
        if self.plateau is None:
            return []
        p = self.plateau
        rows = torch.tensor(active)
        self.average[rows] = score.cpu() if step == 0 else p.smoothing * self.average[rows] + (1 - p.smoothing) * score.cpu()
        if self.first is None:
            self.first = self.average.clone()
        self.history.append(self.average.clone())
        if len(self.history) <= p.patience or step + 1 < p.min_fraction * self.steps or step + 1 >= self.steps:
            return []
        climbed = (self.average - self.first).clamp(min=1e-8)
        gained = self.average - self.history[0]  # over the last `patience` steps
        stopping = [i for i in active if gained[i] < p.tolerance * climbed[i]]
        if stopping:
            self.active = [i for i in self.active if i not in stopping]
            self.stopped[stopping] = True
            with torch.no_grad():
                for value, kept in zip(self.param.parameters(), self.kept):
                    kept[stopping] = value[stopping]
        return stopping

    @torch.no_grad()
    def _restore(self) -> None:
        if self.stopped.any():
            for value, kept in zip(self.param.parameters(), self.kept):
                value[self.stopped.to(value.device)] = kept[self.stopped.to(kept.device)]


def _at_scale(images: torch.Tensor, patch_size: int, scale: float) -> torch.Tensor:
    """Images resized to `scale` of their side, in whole patches (a coarse phase sees fewer tokens)."""
    if scale == 1.0:
        return images
    side = max(patch_size, round(images.shape[-1] * scale / patch_size) * patch_size)
    if side == images.shape[-1]:
        return images
    return F.interpolate(images, size=(side, side), mode="bilinear", antialias=True, align_corners=False)


def _score(model: VisionModel, plan: RenderPlan, images: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """The objective on un-augmented images, seen at the model's input size."""
    if images.shape[-1] != plan.image_size:
        images = F.interpolate(images, size=(plan.image_size, plan.image_size), mode="bilinear", antialias=True, align_corners=False)
    return plan.objective(model.activations(images, plan.objective.needs), channels).float()


def _optimizer(recipe: Recipe, parameters: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if recipe.optimizer == "nadam":
        return torch.optim.NAdam(parameters, lr=lr, betas=recipe.betas)
    return torch.optim.Adam(parameters, lr=lr, betas=recipe.betas, eps=1e-8)
