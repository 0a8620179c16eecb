"""Feature accentuation of a real image (Hamblin et al. 2024, "Feature Accentuation"; Horama implements it).

A rendering from noise shows what a feature wants in general; accentuation shows what it responds to *in this
image*: the optimization starts from the image itself (its exact Fourier coefficients: step 0 is the image) and
raises the feature while a penalty keeps the early-layer activations (block 0's output, what the patch embedding
and one block make of the pixels) close to the original's. What changes is where and how the feature would fire
more; the difference image shows it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import VizError
from ..images import preprocess_uint8, to_pil
from ..models.base import RESIDUAL, Target, VisionModel
from ..specs import parse_features, whole_number
from .objectives import Channel, Objective, make_objective
from .params import FourierImage
from .transforms import CleanFirstCopy, lucid_transforms

# Tuned on the built-in shapes models (benchmarks/bench_quality.py --accentuate; README: Accentuation).
ACCENTUATE_WEIGHT = 1.0
ACCENTUATE_STEPS = 48
EARLY_LAYER = 0  # the penalty's block: its output is the image as the model first encodes it
LEARNING_RATE = 0.05  # Lucid's, on the same Fourier parametrization
COPIES = 2  # the image as it is, and one augmented copy that keeps the change robust (not adversarial noise)
HASH_DIGITS = 16
RECIPE_NAME = "accentuate"  # the gallery's recipe column for accentuated rows


@dataclass
class Accentuation:
    """One accentuated image: the original as the model sees it, the accentuated image, their difference (grey:
    unchanged; brighter/darker where it rose/fell, amplified to the largest change), and what changed."""

    model_id: str
    layer: int
    feature: int
    objective: str  # the gallery's name: the objective's, the source image's hash and the weight
    steps: int
    weight: float
    image_size: int
    original: Image.Image
    accentuated: Image.Image
    difference: Image.Image
    activation_init: float  # the objective on the original
    activation: float  # the objective on the accentuated image
    pixel_mean_abs: float  # mean |accentuated - original| over pixels, in [0, 1] units
    pixel_rms: float  # root mean square of the same difference (pixel L2 per pixel)
    early_distance: float  # ||early(accentuated) - early(original)|| / ||early(original)|| (block EARLY_LAYER)
    patch_values_init: np.ndarray | None  # [grid_h, grid_w] the feature per patch on the original
    patch_values: np.ndarray | None  # the same on the accentuated image
    image_sha256: str | None = None
    seed: int = 0

    def to_row(self) -> dict:
        """The gallery row (see store/schema.py): the accentuated image under its own objective name."""
        return dict(model_id=self.model_id, layer=self.layer, feature=self.feature, objective=self.objective,
                    recipe=RECIPE_NAME, steps=self.steps, seed=self.seed, image_size=self.image_size,
                    image=self.accentuated, activation=self.activation, activation_init=self.activation_init)


def read_image(source) -> tuple[Image.Image, str | None]:
    """The image a user named (a path, bytes or a PIL image) and the sha256 of its bytes (None for a PIL image:
    it has no file), so a gallery row says which image it started from. A bad source is a one-line VizError."""
    if isinstance(source, Image.Image):
        return source, None
    if source is None or (isinstance(source, (str, Path)) and not str(source).strip()):
        raise VizError("No image to accentuate", option="accentuate", fix="give {option} an image file (PNG, JPEG).")
    if isinstance(source, (bytes, bytearray)):
        data, name = bytes(source), "the image"
    else:
        path = Path(source)
        if not path.is_file():
            raise VizError(f"Image {str(path)!r} is not a file", option="accentuate", value=str(path),
                           fix="give {option} an image file (PNG, JPEG).")
        data, name = path.read_bytes(), repr(path.name)
    try:
        import io

        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise VizError(f"Cannot read {name} as an image ({type(error).__name__})", option="accentuate",
                       fix="give {option} a PNG or JPEG file.") from None
    return image, hashlib.sha256(data).hexdigest()


def accentuated_name(objective: Objective, weight: float, sha256: str | None, label: str | None = None) -> str:
    """What the gallery calls an accentuation: `feature-accentuated(cat.png sha256:0123456789abcdef weight 4)`."""
    source = " ".join(p for p in (label, f"sha256:{sha256[:HASH_DIGITS]}" if sha256 else None) if p)
    return f"{objective.name}-accentuated({source + ' ' if source else ''}weight {weight:g})"


def check_weight(weight) -> float:
    weight = ACCENTUATE_WEIGHT if weight is None else weight
    try:
        weight = float(weight)
    except (TypeError, ValueError):
        weight = float("nan")
    if not (weight >= 0 and math.isfinite(weight)):
        raise VizError(f"Accentuation weight {weight} is not a number from 0", option="accentuate_weight",
                       value=weight, fix=f"{{option:use}} {ACCENTUATE_WEIGHT:g} (larger stays closer to the image).")
    return weight


def accentuate(model: VisionModel, image, layer: int, feature, *, objective: str | Objective = "feature",
               steps: int | None = None, weight: float | None = None, image_size: int | None = None, seed: int = 0,
               callback: Callable[[int, Image.Image], None] | None = None, label: str | None = None) -> Accentuation:
    """Raise `feature` of `layer` in `image` (a path, bytes or PIL image) while staying close to it.

    weight: the early-layer penalty's weight (0: no penalty; larger: closer to the image). steps: optimization
    steps (default ACCENTUATE_STEPS). callback(step, image) is called after each step and may raise to cancel.
    label: the image's name in the gallery's objective (default: the file's name when `image` is a path).
    """
    picture, sha256 = read_image(image)
    if label is None and isinstance(image, (str, Path)):
        label = Path(image).name
    layer = whole_number(layer, "layer")
    model.check_layer(layer)
    objective = make_objective(objective, layer)
    objective.check(model)
    features = parse_features(feature, objective.num_channels(model), max_count=1)
    if len(features) != 1:
        raise VizError(f"Accentuation raises one feature, not {len(features)}: pass a single index such as "
                       f"{features[0]}.")
    steps = ACCENTUATE_STEPS if steps is None else whole_number(steps, "steps", minimum=0)
    weight = check_weight(weight)
    size = model.check_image_size(None if image_size is None else whole_number(image_size, "image size", minimum=1))
    original = _model_view(model, picture, size)
    channel = torch.tensor(features, device=model.device)
    early = {Target(RESIDUAL, EARLY_LAYER)}

    generator = torch.Generator().manual_seed(seed)
    param = FourierImage(1, size, [generator]).start_from(original[None]).to(model.device)
    with torch.no_grad():
        start = param().detach()  # the original as the parametrization returns it (the value range's margin)
        early_original = model.activations(start, early)[Target(RESIDUAL, EARLY_LAYER)].float()
    augment = CleanFirstCopy(lucid_transforms(size, size), size)
    optimizer = torch.optim.Adam(param.parameters(), lr=LEARNING_RATE)
    for step in range(steps):
        current = param()
        views = augment(current.repeat_interleave(COPIES, 0), [generator], COPIES, step, steps)
        acts = model.activations(views, objective.needs | early)
        score = objective(acts, channel.repeat(COPIES)).float().mean()
        drift = _relative_squared(acts[Target(RESIDUAL, EARLY_LAYER)][:1].float(), early_original)
        loss = -score + weight * drift
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if callback is not None:
            with torch.no_grad():
                callback(step + 1, to_pil(param()[0]))
    with torch.no_grad():
        final = param().detach()
        both = torch.cat([start, final])
        acts = model.activations(both, objective.needs | early)
        scores = objective(acts, channel.repeat(2)).float().tolist()
        early_final = acts[Target(RESIDUAL, EARLY_LAYER)][1:].float()
        patches = objective.patch_values(acts) if isinstance(objective, Channel) else None
    change = final[0] - start[0]
    grid = acts.grid
    return Accentuation(
        model_id=model.model_id, layer=layer, feature=features[0],
        objective=accentuated_name(objective, weight, sha256, label), steps=steps, weight=weight, image_size=size,
        original=to_pil(start[0]), accentuated=to_pil(final[0]), difference=difference_image(change),
        activation_init=scores[0], activation=scores[1],
        pixel_mean_abs=float(change.abs().mean()), pixel_rms=float(change.square().mean().sqrt()),
        early_distance=float(_relative_squared(early_final, early_original).sqrt()),
        patch_values_init=_grid_values(patches, 0, features[0], grid),
        patch_values=_grid_values(patches, 1, features[0], grid),
        image_sha256=sha256, seed=seed,
    )


def _model_view(model: VisionModel, picture: Image.Image, size: int) -> torch.Tensor:
    """[3, size, size] in [0, 1]: the image through the checkpoint's own pipeline (as patch maps see it), resized
    to the render size when it differs from the model's."""
    pixels = model.preprocess_uint8(ImageOps.exif_transpose(picture))
    if size != model.image_size:
        pixels = preprocess_uint8([to_pil(pixels)], size)[0]
    return pixels.float().to(model.device) / 255


def early_distance(model: VisionModel, pixels: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """[B] relative L2 distance of block EARLY_LAYER's output between images [B, 3, S, S] and reference images:
    the distance the penalty holds down, for judging any image against the original (a rendering from noise too)."""
    target = Target(RESIDUAL, EARLY_LAYER)
    with torch.no_grad():
        acts = model.activations(torch.cat([pixels, reference]).to(model.device), {target})[target].float()
    current, original = acts[: len(pixels)].flatten(1), acts[len(pixels):].flatten(1)
    return ((current - original).norm(dim=1) / original.norm(dim=1).clamp(min=1e-12)).cpu()


def _relative_squared(current: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """||current - original||^2 / ||original||^2: unit-free, so one weight suits any model's scale."""
    return (current - original).square().sum() / original.square().sum().clamp(min=1e-12)


def _grid_values(patches, index: int, feature: int, grid) -> np.ndarray | None:
    if patches is None:
        return None
    return patches[index, :, feature].float().reshape(grid).cpu().numpy()


def difference_image(change: torch.Tensor) -> Image.Image:
    """[3, H, W] signed change -> grey where nothing changed, scaled so the largest change reaches 0 or 1."""
    largest = float(change.abs().max())
    return to_pil(0.5 + change / (2 * largest) if largest > 0 else torch.full_like(change, 0.5))
