"""Is a recipe any good? Three numbers measured on models that learned something (the shapes fixtures).

- activation ratio: does the visualization excite its feature more than the best of thousands of natural images?
  (feature visualization exists to find the evidence a feature wants most; below 1 a dataset scan would do better)
- transfer: is a class visualization made on model A classified as that class by model B, trained on the same task
  with another seed and width? (adversarial texture fools only the model it was made on)
- localization: does the patch map of a shape-selective feature point at the shape? (pointing game on boxes)

Rendered images are judged as a user gets them: the saved PNG, decoded and preprocessed like any other image, so
8-bit rounding and the returned image's scale count (MACO once returned a canvas the model then saw at half the
scale it was optimized on).
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from .core.objectives import Feature
from .core.patchmap import patch_values_for
from .core.recipes import Recipe
from .core.render import render
from .models.base import LOGITS, RESIDUAL, Target, VisionModel

SCAN_BATCH = 256  # images per forward pass when scanning natural images (64 px models: small)


# --- judging images ------------------------------------------------------------------------------------------
def png_roundtrip(image: Image.Image) -> Image.Image:
    """The image as saved to a gallery and read back: PNG bytes, decoded to RGB."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def saved_pixels(model: VisionModel, images: Sequence[Image.Image]) -> torch.Tensor:
    """[N, 3, S, S] model input for images judged from their saved PNGs, through the checkpoint's own pipeline."""
    return torch.stack([model.preprocess(png_roundtrip(image)) for image in images])


def feature_values(model: VisionModel, layer: int, pixels: torch.Tensor) -> torch.Tensor:
    """The paper's objective for every channel of `layer`: [N, C], images in [0, 1] scanned in batches."""
    objective = Feature(layer)
    out = []
    with torch.no_grad():
        for start in range(0, len(pixels), SCAN_BATCH):
            acts = model.activations(pixels[start : start + SCAN_BATCH].float(), objective.needs)
            out.append(objective.values(acts).float().cpu())
    return torch.cat(out)


def uint8_to_pixels(images: np.ndarray) -> torch.Tensor:
    """[N, H, W, 3] uint8 (as generated) -> [N, 3, H, W] floats in [0, 1]."""
    return torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).float() / 255


# --- 1. activation ratio -------------------------------------------------------------------------------------
def activation_ratios(rendered: np.ndarray, natural_best: np.ndarray) -> np.ndarray:
    """Rendered activation / best natural activation per feature; NaN where no natural image excites the feature
    (best <= 0), since a ratio against a non-positive reference means nothing."""
    rendered = np.asarray(rendered, dtype=np.float64)
    natural_best = np.asarray(natural_best, dtype=np.float64)
    ratios = np.full(rendered.shape, np.nan)
    positive = natural_best > 0
    ratios[positive] = rendered[positive] / natural_best[positive]
    return ratios


def median_ratio(ratios: np.ndarray) -> float:
    """Median over the features that have a ratio (NaN if none has)."""
    ratios = np.asarray(ratios, dtype=np.float64)
    finite = ratios[np.isfinite(ratios)]
    return float(np.median(finite)) if finite.size else float("nan")


@dataclass
class ActivationReport:
    layer: int
    features: list[int]
    rendered: np.ndarray  # activation of each saved image, re-measured from its PNG
    natural_best: np.ndarray  # best activation of each feature over the natural images
    ratios: np.ndarray
    seconds_per_feature: float
    images: list[Image.Image] = field(repr=False, default_factory=list)

    @property
    def median(self) -> float:
        return median_ratio(self.ratios)


def natural_best(model: VisionModel, layer: int, images: np.ndarray) -> np.ndarray:
    """[C] the best activation of every channel of `layer` over `images` ([N, H, W, 3] uint8 at model size)."""
    return feature_values(model, layer, uint8_to_pixels(images)).max(0).values.numpy()


def activation_ratio(
    model: VisionModel,
    layer: int,
    features: Sequence[int],
    recipe: str | Recipe,
    natural_images: np.ndarray,
    *,
    steps: int | None = None,
    seed: int = 0,
) -> ActivationReport:
    """Render `features` with `recipe` and compare each saved image's activation with the natural best."""
    best = natural_best(model, layer, natural_images)[list(features)]
    start = time.perf_counter()
    results = render(model, layer, list(features), recipe=recipe, steps=steps, seed=seed, progress=False)
    seconds = (time.perf_counter() - start) / len(results)
    images = [r.image for r in results]
    values = feature_values(model, layer, saved_pixels(model, images))
    rendered = values[torch.arange(len(results)), torch.tensor([r.feature for r in results])].numpy()
    return ActivationReport(layer, [r.feature for r in results], rendered, best, activation_ratios(rendered, best),
                            seconds, images)


# --- 2. transfer ----------------------------------------------------------------------------------------------
def classify(model: VisionModel, images: Sequence[Image.Image]) -> np.ndarray:
    """Predicted class of each image, judged from its saved PNG."""
    with torch.no_grad():
        logits = model.activations(saved_pixels(model, images), {Target(LOGITS)})[Target(LOGITS)]
    return logits.float().argmax(1).cpu().numpy()


def transfer_hits(predicted: Sequence[int], classes: Sequence[int]) -> int:
    """How many class visualizations the other model classifies as their class."""
    return int(np.sum(np.asarray(predicted) == np.asarray(classes)))


@dataclass
class TransferReport:
    classes: list[int]
    predicted: np.ndarray  # model B's class for each visualization made on model A
    seconds_per_feature: float
    images: list[Image.Image] = field(repr=False, default_factory=list)

    @property
    def hits(self) -> int:
        return transfer_hits(self.predicted, self.classes)

    @property
    def total(self) -> int:
        return len(self.classes)


def transfer(
    model_a: VisionModel,
    model_b: VisionModel,
    recipe: str | Recipe,
    *,
    classes: Sequence[int] | None = None,
    steps: int | None = None,
    seed: int = 0,
) -> TransferReport:
    """Visualize each class logit on model A; ask model B what it sees."""
    classes = list(range(model_a.num_classes)) if classes is None else list(classes)
    start = time.perf_counter()
    results = render(model_a, 0, classes, objective="logit", recipe=recipe, steps=steps, seed=seed, progress=False)
    seconds = (time.perf_counter() - start) / len(results)
    images = [r.image for r in results]
    return TransferReport([r.feature for r in results], classify(model_b, images), seconds, images)


# --- 3. localization ------------------------------------------------------------------------------------------
def box_patch_masks(boxes: np.ndarray, image_size: int, patch_size: int) -> np.ndarray:
    """[N, g, g] bool: which patches of the grid overlap each box (x0, y0, x1, y1 in pixels, x1/y1 exclusive)."""
    boxes = np.asarray(boxes)
    grid = image_size // patch_size
    starts = np.arange(grid) * patch_size
    ends = starts + patch_size
    cols = (starts[None, :] < boxes[:, 2:3]) & (ends[None, :] > boxes[:, 0:1])  # [N, g]
    rows = (starts[None, :] < boxes[:, 3:4]) & (ends[None, :] > boxes[:, 1:2])
    return rows[:, :, None] & cols[:, None, :]


def pointing_hits(maps: np.ndarray, box_masks: np.ndarray) -> np.ndarray:
    """[N] bool: the pointing game, does each map's maximum fall on a patch of the box? (ties: the first maximum)"""
    maps = np.asarray(maps)
    flat = maps.reshape(len(maps), -1).argmax(1)
    return np.asarray(box_masks).reshape(len(maps), -1)[np.arange(len(maps)), flat]


def box_selectivity(patch_values: torch.Tensor, box_masks: np.ndarray) -> torch.Tensor:
    """[C] how much more each channel fires on box patches than on background patches, in units of its spread
    (mean over images of in-box mean minus background mean, over the std of all its patch values)."""
    values = patch_values.flatten(1, 2).float()  # [N, P, C]
    inside = torch.from_numpy(np.asarray(box_masks)).flatten(1).float()[..., None]  # [N, P, 1]
    outside = 1 - inside
    mean_in = (values * inside).sum(1) / inside.sum(1).clamp(min=1)
    mean_out = (values * outside).sum(1) / outside.sum(1).clamp(min=1)
    return (mean_in - mean_out).mean(0) / (values.std(dim=(0, 1)) + 1e-6)


@dataclass
class LocalizationReport:
    layer: int
    features: list[int]  # the most shape-selective channels, chosen on one half of the images
    hit_rates: np.ndarray  # pointing-game hit rate of each feature on its top images of the other half
    chance: float  # the hit rate of a map that points at a random patch: the mean share of patches on the box

    @property
    def hit_rate(self) -> float:
        return float(np.mean(self.hit_rates)) if len(self.hit_rates) else float("nan")


def _patch_values(model: VisionModel, layer: int, pixels: torch.Tensor) -> torch.Tensor:
    objective = Feature(layer)
    return torch.cat([patch_values_for(model, objective, pixels[s : s + SCAN_BATCH]) for s in range(0, len(pixels), SCAN_BATCH)])


def localization(
    model: VisionModel,
    layer: int,
    images: np.ndarray,
    boxes: np.ndarray,
    *,
    features: int = 8,
    top_images: int = 16,
    selection_images: int = 256,
) -> LocalizationReport:
    """Pick the `features` most box-selective channels on the first `selection_images` images; then, on the rest,
    play the pointing game with each feature's patch maps of its `top_images` most activating images (the images
    the explore tab shows). Images are [N, S, S, 3] uint8 at the model's input size."""
    pixels = uint8_to_pixels(images)
    masks = box_patch_masks(boxes, model.image_size, model.patch_size)
    pick = slice(0, selection_images)
    chosen = box_selectivity(_patch_values(model, layer, pixels[pick]), masks[pick]).topk(features).indices.tolist()
    held_pixels, held_masks = pixels[selection_images:], masks[selection_images:]
    scores = feature_values(model, layer, held_pixels)[:, chosen]  # [M, K]
    rates, chance = [], []
    for k, feature in enumerate(chosen):
        top = scores[:, k].topk(min(top_images, len(held_pixels))).indices
        maps = _patch_values(model, layer, held_pixels[top])[..., feature].numpy()
        rates.append(pointing_hits(maps, held_masks[top.numpy()]).mean())
        chance.append(held_masks[top.numpy()].mean())
    return LocalizationReport(layer, chosen, np.asarray(rates, dtype=np.float64), float(np.mean(chance)))


# --- 4. what the eye sees --------------------------------------------------------------------------------------
# Activation alone rewards fitting the exact pixel layout the model was optimized on: a real ViT's best-scoring
# images can be grey, low-contrast and rippled on the patch grid. These numbers are judged against photos'.
def jittered_views(pixels: torch.Tensor, views: int = 8, *, max_shift: int = 7,
                   scales: tuple[float, float] = (0.9, 1.1), seed: int = 0) -> list[torch.Tensor]:
    """`views` copies of [N, 3, S, S] images, each shifted by up to `max_shift` px (sub-patch for 14/16 px
    patches) and rescaled by a factor in `scales` about the centre; borders are mirrored, so no grey frame."""
    generator = torch.Generator().manual_seed(seed)
    size = pixels.shape[-1]
    out = []
    for _ in range(views):
        scale = scales[0] + (scales[1] - scales[0]) * torch.rand((), generator=generator).item()
        dx, dy = (torch.randint(-max_shift, max_shift + 1, (2,), generator=generator) * 2 / size).tolist()
        theta = torch.tensor([[1 / scale, 0, dx], [0, 1 / scale, dy]], dtype=pixels.dtype)
        grid = torch.nn.functional.affine_grid(theta.expand(len(pixels), 2, 3), list(pixels.shape), align_corners=False)
        out.append(torch.nn.functional.grid_sample(pixels, grid, mode="bilinear", padding_mode="reflection",
                                                   align_corners=False).clamp(0, 1))
    return out


def robust_values(value_of, pixels: torch.Tensor, views: int = 8, **jitter) -> np.ndarray:
    """[N] the mean of `value_of(view)` ([N] per view) over jittered views: what survives the shifts and rescalings
    any real look at the image makes (another crop, another resize), unlike a fit to exact pixel positions."""
    return np.mean([np.asarray(value_of(view), dtype=np.float64) for view in jittered_views(pixels, views, **jitter)], 0)


def patch_grid_energy(pixels: torch.Tensor, patch_size: int) -> np.ndarray:
    """[N] share of each image's spectral energy (luminance, Hann-windowed, DC removed) that sits on the patch grid's
    frequencies (multiples of size/patch cycles in both directions, one bin either side): a ripple with the patch's
    period puts its energy there, photos very little. Meaningful for grids of 8 or more patches per side."""
    gray = pixels.float().mean(1)  # [N, S, S]
    size = gray.shape[-1]
    window = torch.hann_window(size, periodic=False)
    gray = (gray - gray.mean((1, 2), keepdim=True)) * window[:, None] * window[None, :]
    power = torch.fft.fft2(gray).abs().pow(2)
    index = torch.arange(size)
    offset = index % (size // patch_size)  # the grid's frequencies: multiples of the number of patches per side
    near_grid = (offset <= 1) | (offset >= size // patch_size - 1)
    near_zero = (index <= 1) | (index >= size - 1)
    lattice = near_grid[:, None] & near_grid[None, :]
    dc = near_zero[:, None] & near_zero[None, :]
    total = power[:, ~dc].sum(1)
    return (power[:, lattice & ~dc].sum(1) / total.clamp(min=1e-12)).numpy()


def contrast(pixels: torch.Tensor) -> np.ndarray:
    """[N] standard deviation of all pixel values in [0, 1] (photos: about 0.2-0.3; a grey image: under 0.1)."""
    return pixels.float().flatten(1).std(1).numpy()


def colourfulness(pixels: torch.Tensor) -> np.ndarray:
    """[N] Hasler and Suesstrunk's colourfulness on [0, 1] pixels: spread and mean of the red-green and
    yellow-blue opponent channels (0 for any grey image)."""
    red, green, blue = pixels.float().unbind(1)
    rg, yb = red - green, (red + green) / 2 - blue
    spread = (rg.flatten(1).std(1) ** 2 + yb.flatten(1).std(1) ** 2).sqrt()
    mean = (rg.flatten(1).mean(1) ** 2 + yb.flatten(1).mean(1) ** 2).sqrt()
    return (spread + 0.3 * mean).numpy()


def embeddings(model: VisionModel, pixels: torch.Tensor) -> torch.Tensor:
    """[N, D] the model's own view of each image: its last block's output averaged over patch tokens."""
    target = Target(RESIDUAL, model.num_layers - 1)
    out = []
    with torch.no_grad():
        for start in range(0, len(pixels), SCAN_BATCH):
            acts = model.activations(pixels[start : start + SCAN_BATCH].float(), {target})
            out.append(acts.patches(target).float().mean(1).cpu())
    return torch.cat(out)


def plausibility(rendered: torch.Tensor, references: torch.Tensor) -> np.ndarray:
    """[F] MACO's plausibility: mean cosine similarity between each visualization's embedding ([F, D]) and the
    embeddings of its feature's top photo crops ([F, K, D]). A picture of what the photos show scores high; noise
    that only drives the channel does not."""
    rendered = torch.nn.functional.normalize(rendered.float(), dim=-1)
    references = torch.nn.functional.normalize(references.float(), dim=-1)
    return torch.einsum("fd,fkd->fk", rendered, references).mean(1).numpy()


def photo_range(values: np.ndarray, low: float = 5, high: float = 95) -> tuple[float, float]:
    """The span a measure takes over photos (percentiles), to say whether a picture lies within it."""
    return float(np.percentile(values, low)), float(np.percentile(values, high))


@dataclass
class LooksReport:
    """Every measure of a set of visualizations, each against its photo reference; no single number decides."""

    layer: int
    features: list[int]
    ratios: np.ndarray  # activation of the saved image / best over the photos
    robust_ratios: np.ndarray  # the same, averaged over jittered views of the saved image
    grid_energy: np.ndarray
    contrast: np.ndarray
    colourfulness: np.ndarray
    plausibility: np.ndarray
    photo_grid_energy: float  # the photos' median
    photo_contrast: tuple[float, float]  # the photos' 5th-95th percentiles
    photo_colourfulness: tuple[float, float]
    photo_plausibility: float  # random photo crops against the same top crops: what chance looks like

    def summary(self) -> dict[str, float]:
        """Medians over features, next to the photos' reference values."""
        median = lambda values: float(np.nanmedian(values)) if len(values) else float("nan")  # noqa: E731
        return {
            "ratio": median(self.ratios), "robust_ratio": median(self.robust_ratios),
            "grid_energy": median(self.grid_energy), "photo_grid_energy": self.photo_grid_energy,
            "contrast": median(self.contrast), "photo_contrast_low": self.photo_contrast[0],
            "photo_contrast_high": self.photo_contrast[1],
            "colourfulness": median(self.colourfulness), "photo_colourfulness_low": self.photo_colourfulness[0],
            "photo_colourfulness_high": self.photo_colourfulness[1],
            "plausibility": median(self.plausibility), "photo_plausibility": self.photo_plausibility,
        }


@dataclass
class PhotoReference:
    """What the photos give every judgement at one block, computed once: their activations, embeddings and the
    ranges of the picture measures."""

    pixels: torch.Tensor  # [N, 3, S, S]
    values: torch.Tensor  # [N, C] every channel of the block
    embeddings: torch.Tensor  # [N, D]
    grid_energy: float
    contrast: tuple[float, float]
    colourfulness: tuple[float, float]


def photo_reference(model: VisionModel, layer: int, photos: np.ndarray) -> PhotoReference:
    """The reference of a pool of photo crops ([N, S, S, 3] uint8 at the model's size) at `layer`."""
    pixels = uint8_to_pixels(photos)
    return PhotoReference(pixels, feature_values(model, layer, pixels), embeddings(model, pixels),
                          float(np.median(patch_grid_energy(pixels, model.patch_size))), photo_range(contrast(pixels)),
                          photo_range(colourfulness(pixels)))


def judge_looks(model: VisionModel, layer: int, features: Sequence[int], images: Sequence[Image.Image],
                photos: np.ndarray | PhotoReference, *, top_crops: int = 8, views: int = 8, seed: int = 0) -> LooksReport:
    """Judge saved visualizations (one PIL image per feature) against a pool of photo crops ([N, S, S, 3] uint8
    at the model's size, or its `photo_reference` at this layer): activation and its robust version over the
    photos' best, patch-grid energy, contrast, colour, and plausibility against each feature's `top_crops` photos."""
    features = list(features)
    reference = photos if isinstance(photos, PhotoReference) else photo_reference(model, layer, photos)
    photo_values = reference.values[:, features]  # [N, F]
    best = photo_values.max(0).values.numpy()
    pixels = saved_pixels(model, images)
    own = torch.arange(len(features))

    def own_values(view: torch.Tensor) -> np.ndarray:
        return feature_values(model, layer, view)[own, features].numpy()

    count = len(reference.pixels)
    top = photo_values.topk(min(top_crops, count), dim=0).indices.T  # [F, K]
    chance = torch.randint(0, count, top.shape, generator=torch.Generator().manual_seed(seed))
    return LooksReport(
        layer, features,
        ratios=activation_ratios(own_values(pixels), best),
        robust_ratios=activation_ratios(robust_values(own_values, pixels, views, seed=seed), best),
        grid_energy=patch_grid_energy(pixels, model.patch_size),
        contrast=contrast(pixels),
        colourfulness=colourfulness(pixels),
        plausibility=plausibility(embeddings(model, pixels), reference.embeddings[top]),
        photo_grid_energy=reference.grid_energy,
        photo_contrast=reference.contrast,
        photo_colourfulness=reference.colourfulness,
        photo_plausibility=float(np.mean(plausibility(reference.embeddings[chance[:, 0]], reference.embeddings[top]))),
    )


# --- diversity and negatives (issue 20) ----------------------------------------------------------------------
def mean_pairwise_distance(vectors: torch.Tensor) -> float:
    """Mean cosine distance (1 - cosine) over the pairs of rows of [N, D]: 0 when N images look alike to a model."""
    unit = torch.nn.functional.normalize(vectors.float(), dim=-1)
    n = len(unit)
    cosines = unit @ unit.T
    return float((n * n - cosines.sum()) / (n * (n - 1)))


@dataclass
class DiversityReport:
    """N images per feature, repelled and plain (the same N starting images with no repulsion)."""

    features: list[int]
    facets: int
    weight: float
    activation: np.ndarray  # [F, 2] mean activation of a feature's saved images: repelled, plain
    layer_distance: np.ndarray  # [F, 2] mean pairwise distance in the judged layer's features (all channels)
    judge_distance: np.ndarray  # [F, 2] the same in an independent model's last-block embedding
    images: list[Image.Image] = field(repr=False, default_factory=list)  # the repelled images, facets together

    @property
    def activation_ratio(self) -> float:
        """Mean over features of repelled / plain activation: the price of diversity (1: none)."""
        return float(np.mean(self.activation[:, 0] / self.activation[:, 1]))


def diversity_report(model: VisionModel, layer: int, features: Sequence[int], recipe: str | Recipe, *,
                     facets: int = 4, weight: float | None = None, judge: VisionModel | None = None,
                     steps: int | None = None, seed: int = 0, plain: list | None = None) -> DiversityReport:
    """Render `facets` images of each feature with and without the diversity term, and judge the saved PNGs
    (`plain`: the results of the run without it, when several weights are compared)."""
    activation, layer_distance, judge_distance, kept = [], [], [], []
    def run(w):
        return render(model, layer, list(features), recipe=recipe, steps=steps, seed=seed, progress=False,
                      diversity=facets, diversity_weight=w)

    runs = [run(weight), plain if plain is not None else run(0.0)]
    for i, feature in enumerate(features):
        per_run = []
        for results in runs:
            images = [r.image for r in results[i * facets : (i + 1) * facets]]
            pixels = saved_pixels(model, images)
            values = feature_values(model, layer, pixels)
            judged = embeddings(judge, saved_pixels(judge, images)) if judge is not None else values
            per_run.append((float(values[:, feature].mean()), mean_pairwise_distance(values),
                            mean_pairwise_distance(judged), images))
        activation.append([p[0] for p in per_run])
        layer_distance.append([p[1] for p in per_run])
        judge_distance.append([p[2] for p in per_run])
        kept += per_run[0][3]
    from .core.diversity import DIVERSITY_WEIGHT

    return DiversityReport(list(features), facets, DIVERSITY_WEIGHT if weight is None else weight,
                           np.array(activation), np.array(layer_distance), np.array(judge_distance), kept)


@dataclass
class NegativeReport:
    """A feature's most negative image against the lowest activation any natural image gives it."""

    features: list[int]
    rendered: np.ndarray  # the feature's activation of each saved negative image (from its PNG)
    natural_lowest: np.ndarray  # the lowest activation of each feature over the natural images
    rendered_init: np.ndarray  # the feature's activation of the starting image

    @property
    def hits(self) -> int:
        """Features whose negative image goes below every natural image."""
        return int(np.sum(self.rendered < self.natural_lowest))


def negative_report(model: VisionModel, layer: int, features: Sequence[int], recipe: str | Recipe,
                    natural_images: np.ndarray, *, steps: int | None = None, seed: int = 0) -> NegativeReport:
    """Render `feature-negative` for each feature and compare the saved image's activation with the natural minimum."""
    lowest = feature_values(model, layer, uint8_to_pixels(natural_images)).min(0).values.numpy()[list(features)]
    results = render(model, layer, list(features), objective="feature-negative", recipe=recipe, steps=steps,
                     seed=seed, progress=False)
    values = feature_values(model, layer, saved_pixels(model, [r.image for r in results]))
    rendered = values[torch.arange(len(results)), torch.tensor(list(features))].numpy()
    return NegativeReport(list(features), rendered, lowest, -np.array([r.activation_init for r in results]))


# --- accentuation (issue 20) ----------------------------------------------------------------------------------
@dataclass
class AccentuationReport:
    """Images accentuated for features they already drive, against plain renderings of the same features from noise.

    Distances are to the original image (as the model sees it), measured on the saved 8-bit images."""

    weight: float
    steps: int
    top_fraction: float  # the pointing game's share of the original's highest patches
    pairs: list[tuple[int, int]]  # (image index, feature)
    activation: np.ndarray  # [N, 3] the feature on the original, the accentuated image, the plain rendering
    pixel_mean_abs: np.ndarray  # [N, 2] mean |image - original| of the accentuated image and the plain rendering
    pixel_rms: np.ndarray  # [N, 2] root mean square of the same
    early: np.ndarray  # [N, 2] relative L2 distance of block 0's output to the original's
    hits: np.ndarray  # [N] the top patch of the accentuated map's increase lies in the original's top patches
    kept: np.ndarray  # [N] the top patch of the accentuated map itself lies in the original's top patches

    @property
    def hit_rate(self) -> float:
        return float(np.mean(self.hits))

    @property
    def kept_rate(self) -> float:
        return float(np.mean(self.kept))

    @property
    def gain(self) -> np.ndarray:
        """[N] the accentuated image's rise over the original, as a share of the plain rendering's."""
        rise = self.activation[:, 2] - self.activation[:, 0]
        return (self.activation[:, 1] - self.activation[:, 0]) / np.where(rise > 0, rise, np.nan)


def pointing_hit(values_init: np.ndarray, values: np.ndarray, top_fraction: float, *, increase: bool = True) -> bool:
    """Whether the patch where the feature rose most (increase=False: where it is highest after) lies in the
    original's top `top_fraction` of patches."""
    before = np.asarray(values_init, dtype=np.float64).ravel()
    after = np.asarray(values, dtype=np.float64).ravel()
    top = np.argsort(-before, kind="stable")[: max(1, round(top_fraction * before.size))]
    return int(np.argmax(after - before if increase else after)) in set(top.tolist())


def accentuation_report(model: VisionModel, layer: int, images: np.ndarray, *, features_per_image: int = 2,
                        weight: float | None = None, steps: int | None = None, plain_steps: int | None = None,
                        recipe: str | Recipe | None = None, top_fraction: float = 0.25, choose: str = "mean",
                        seed: int = 0) -> AccentuationReport:
    """Accentuate each image (uint8 [N, S, S, 3]) for the `features_per_image` features it drives most (`choose`:
    "mean" over patches, the objective; or "peak", the highest patch: features that fire somewhere in particular)
    and render those features from noise (`recipe`, `plain_steps`): activation and distances of both."""
    from .core.accentuate import ACCENTUATE_WEIGHT, accentuate, early_distance
    from .core.recipes import DEFAULT_RECIPE

    originals = uint8_to_pixels(images)
    if choose == "peak":
        driven_by = _patch_values(model, layer, originals).flatten(1, 2).max(1).values
    else:
        driven_by = feature_values(model, layer, originals)
    driven = driven_by.topk(features_per_image, dim=1).indices.tolist()
    plain_of: dict[int, Image.Image] = {}
    pairs, activation, mean_abs, rms, early, hits, kept = [], [], [], [], [], [], []
    for index, features in enumerate(driven):
        for feature in features:
            result = accentuate(model, Image.fromarray(images[index]), layer, feature, steps=steps, weight=weight,
                                seed=seed)
            if feature not in plain_of:
                plain_of[feature] = render(model, layer, [feature], recipe=recipe or DEFAULT_RECIPE, steps=plain_steps,
                                           seed=seed, progress=False)[0].image
            original = saved_pixels(model, [result.original])
            candidates = saved_pixels(model, [result.accentuated, plain_of[feature]])
            values = feature_values(model, layer, torch.cat([original, candidates]))[:, feature].tolist()
            change = candidates - original
            pairs.append((index, feature))
            activation.append(values)
            mean_abs.append(change.abs().mean((1, 2, 3)).tolist())
            rms.append(change.square().mean((1, 2, 3)).sqrt().tolist())
            early.append(early_distance(model, candidates, original.expand_as(candidates)).tolist())
            hits.append(pointing_hit(result.patch_values_init, result.patch_values, top_fraction))
            kept.append(pointing_hit(result.patch_values_init, result.patch_values, top_fraction, increase=False))
    return AccentuationReport(ACCENTUATE_WEIGHT if weight is None else float(weight), result.steps, top_fraction,
                              pairs, np.array(activation), np.array(mean_abs), np.array(rms), np.array(early),
                              np.array(hits), np.array(kept))


# --- CLIP text prompts (issue 20) -----------------------------------------------------------------------------
def zero_shot(clip: VisionModel, images: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
    """Index of the prompt each image (uint8 [N, H, W, 3]) resembles most, by the CLIP's own embeddings."""
    from .models.text import ClipText, clip_image_embeddings

    text = ClipText(clip).encode(list(prompts))
    pixels = torch.stack([clip.preprocess(Image.fromarray(image)) for image in images])
    found = [clip_image_embeddings(clip, pixels[s:s + SCAN_BATCH]) @ text.T for s in range(0, len(pixels), SCAN_BATCH)]
    return torch.cat(found).argmax(1).numpy()


@dataclass
class PromptReport:
    """Images rendered for "a <colour> <shape>" on a CLIP, judged by a shape-only classifier and a pixel statistic."""

    prompts: list[str]
    shapes: list[int]  # the class each prompt names
    colours: list[str]  # the colour each prompt names
    predicted_shapes: np.ndarray  # the classifier's class of each saved image
    found_colours: list[str | None]  # data.shape_captions.dominant_colour of each saved image
    cosine: np.ndarray  # the objective (cosine with the prompt) of each saved image, as render measured it
    seconds_per_prompt: float
    images: list[Image.Image] = field(repr=False, default_factory=list)

    @property
    def shape_hits(self) -> int:
        return int(np.sum(self.predicted_shapes == np.asarray(self.shapes)))

    @property
    def colour_hits(self) -> int:
        return sum(found == named for found, named in zip(self.found_colours, self.colours))

    @property
    def both_hits(self) -> int:
        return int(sum(s == p and found == named for s, p, found, named in
                       zip(self.shapes, self.predicted_shapes, self.found_colours, self.colours)))


def prompt_report(clip: VisionModel, classifier: VisionModel, recipe: str | Recipe, *, steps: int | None = None,
                  seed: int = 0, colours: Sequence[str] | None = None, shapes: Sequence[str] | None = None,
                  layer: int | None = None) -> PromptReport:
    """Render "a <colour> <shape>" for every pair on `clip` (`layer`: prompt-cls at that block; None: the image
    embedding) and judge each saved PNG: its shape by `classifier` (trained where only the outline tells the class),
    its colour by the dominant hue of its saturated pixels."""
    from .core.prompts import prompt_objective
    from .data.shape_captions import SHAPE_COLORS, dominant_colour, object_prompt
    from .data.shapes import SHAPE_CLASSES

    colours, shapes = list(colours or SHAPE_COLORS), list(shapes or SHAPE_CLASSES)
    pairs = [(c, s) for s in shapes for c in colours]
    prompts = [object_prompt(c, s) for c, s in pairs]
    objective = prompt_objective("prompt" if layer is None else "prompt-cls", layer, prompts)
    start = time.perf_counter()
    results = render(clip, layer or 0, "all", objective=objective, recipe=recipe, steps=steps, seed=seed, progress=False)
    seconds = (time.perf_counter() - start) / len(results)
    images = [png_roundtrip(r.image) for r in results]
    return PromptReport(prompts, [SHAPE_CLASSES.index(s) for _, s in pairs], [c for c, _ in pairs],
                        classify(classifier, images), [dominant_colour(np.asarray(i)) for i in images],
                        np.array([r.activation for r in results]), seconds, images)
