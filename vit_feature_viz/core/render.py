"""The optimization loop: many features at once, each with its own image, randomness and augmentations.

A feature's randomness comes only from a generator seeded by (seed, layer, feature) and its loss is summed, not
averaged, over the batch, so its image is the same whichever batch or process renders it.
"""

from __future__ import annotations

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
from .objectives import Objective, make_objective
from .registries import PARAMETRIZATIONS
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


def feature_seed(seed: int, layer: int, feature: int) -> int:
    """A stable 63-bit seed for one feature: independent of batch, process and Python's hash salt."""
    digest = hashlib.sha256(f"{seed}:{layer}:{feature}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def render(model, layer: int, features, **options) -> list[RenderResult]:
    """Render the images that maximize `features` of `layer`; see `render_batches` for the options."""
    return [result for batch in render_batches(model, layer, features, **options) for result in batch]


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
) -> Iterator[list[RenderResult]]:
    """Yield results batch by batch, so callers can save finished features before the next batch starts.

    batch_size: features optimized together (each has `recipe.copies` images); default fills ~8 images on CPU.
    callback(step, {feature: image}): called every `callback_every` steps with the current images; it may raise
    to cancel.
    """
    model = model if isinstance(model, VisionModel) else load_model(model)
    plan = plan_render(model, layer, features, objective, recipe, steps, image_size, batch_size, seed)
    from tqdm.auto import tqdm

    total = plan.steps * len(plan.features)
    every = callback_every or max(1, plan.steps // 20)
    with tqdm(total=total, disable=not progress, desc=f"layer {layer}", unit="feature-step") as bar:
        start, size = 0, plan.batch_size
        while start < len(plan.features):
            chunk, done = plan.features[start : start + size], bar.n
            try:
                results = _render_chunk(model, plan, chunk, seed, bar, callback, every)
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
    plan = plan_render(model, layer, features, options.get("objective", "feature"), options.get("recipe", DEFAULT_RECIPE),
                       options.get("steps"), options.get("image_size"), options.get("batch_size"), options.get("seed", 0))
    if not plan.features or not plan.steps:
        return 0.0
    stamps: list[float] = []
    probe = {**options, "steps": min(3, plan.steps), "progress": False, "callback_every": 1,
             "callback": lambda step, images: stamps.append(time.perf_counter())}
    start = time.perf_counter()
    next(render_batches(model, plan.layer, plan.features[: plan.batch_size], **probe))
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else stamps[0] - start
    batches = math.ceil(len(plan.features) / plan.batch_size)
    return per_step * plan.steps * math.ceil(batches / max(1, processes))


@dataclass
class RenderPlan:
    """A validated request: everything is checked before the first step, so bad input fails fast."""

    layer: int
    features: list[int]
    objective: Objective
    recipe: Recipe
    steps: int
    image_size: int
    canvas: int
    batch_size: int


def plan_render(model: VisionModel, layer, features, objective, recipe, steps, image_size, batch_size, seed=0) -> RenderPlan:
    """Every setting checked (whole numbers, ranges the gallery can store) before the first step."""
    layer = whole_number(layer, "layer")
    model.check_layer(layer)
    whole_number(seed, "seed", minimum=0, maximum=MAX_SEED)
    objective = make_objective(objective, layer)
    objective.check(model)
    features = parse_features(features, objective.num_channels(model), seed)
    recipe = get_recipe(recipe)
    steps = recipe.steps if steps is None else whole_number(steps, "steps", minimum=0, maximum=MAX_INT32)
    size = model.check_image_size(None if image_size is None else whole_number(image_size, "image size", minimum=1))
    if batch_size is None:
        batch_size = max(1, IMAGES_PER_BATCH.get(model.device.type, 8) // recipe.copies)
    batch_size = whole_number(batch_size, "batch size", minimum=1)
    return RenderPlan(layer, features, objective, recipe, steps, size, recipe.canvas_size(size), batch_size)


def _render_chunk(model, plan: RenderPlan, chunk, seed, bar, callback, every) -> list[RenderResult]:
    recipe, device = plan.recipe, model.device
    generators = [torch.Generator().manual_seed(feature_seed(seed, plan.layer, f)) for f in chunk]
    param = PARAMETRIZATIONS.get(recipe.parametrization)(len(chunk), plan.canvas, generators).to(device)
    channels = torch.tensor(chunk, device=device)
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
        if recipe.tv_weight:
            loss = loss + recipe.tv_weight * total_variation(images).view(len(active), copies).mean(1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        param.after_step()
        for i in watch.update(step, active, score.detach()):
            steps_run[i] = step + 1
        bar.update(len(active))
        if callback is not None and ((step + 1) % every == 0 or step + 1 == plan.steps):
            with torch.no_grad():
                callback(step + 1, {f: to_pil(img) for f, img in zip(chunk, recipe.view(param()))})
    bar.update(sum(plan.steps - n for n in steps_run))  # features stopped early count as done
    with torch.no_grad():
        final_images = recipe.view(param())
        final = _score(model, plan, final_images, channels)
    return [
        RenderResult(
            model_id=model.model_id, layer=plan.layer, feature=f, objective=plan.objective.name, recipe=recipe.name,
            steps=plan.steps, seed=seed, image_size=plan.image_size, image=to_pil(img),
            activation=float(a), activation_init=float(a0), steps_run=n,
        )
        for f, n, img, a, a0 in zip(chunk, steps_run, final_images, final.tolist(), initial.tolist())
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
