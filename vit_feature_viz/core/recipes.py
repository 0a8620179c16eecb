"""Recipes: a parametrization, a set of augmentations and optimizer settings that together make good images.

`paper` is Ghiasi et al. 2022's recipe as their code runs it; `fourier` is Lucid's; `maco` is Fel et al. 2023's.
The augmentation sets live in transforms.py and scale their pixel amounts to the canvas, so tiny or preview
sizes behave like full-size renders.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from . import transforms as T
from torch import Tensor

from .registries import DEFAULT_RECIPE, RECIPES  # noqa: F401  (DEFAULT_RECIPE: jobs, render and the app read it here)


@dataclass(frozen=True)
class Phase:
    """A stretch of a render's steps that spends less per step: early steps only need the coarse layout, which a
    smaller input (fewer tokens: cost falls with the square of the side) and fewer copies already give."""

    until: float  # the phase covers steps before this fraction of all steps
    scale: float = 1.0  # model input side / full input side (rounded to whole patches)
    copies: int | None = None  # augmented copies per feature (None: the recipe's)
    clean: bool = False  # each feature's first copy is the un-augmented image as it will be returned


@dataclass(frozen=True)
class Plateau:
    """Stop a feature once its objective stops rising, and drop it from the batch, so its neighbours run faster.

    Rising is judged on an exponential average of the augmented objective: a feature stops when over the last
    `patience` steps the average gained less than `tolerance` of the distance it has climbed since the start."""

    patience: int = 32
    tolerance: float = 0.01
    min_fraction: float = 0.25  # never before this fraction of the steps
    smoothing: float = 0.9


@dataclass(frozen=True)
class Recipe:
    """Everything but the model and the objective that decides how an image is optimized."""

    name: str
    parametrization: str  # a name in registries.PARAMETRIZATIONS
    build_transforms: Callable[[int, int], T.Compose]  # (canvas size, model input size) -> augmentations
    copies: int  # augmented copies of each feature's image per step
    steps: int
    lr: float
    lr_clip: float  # CLIP features need a larger step (the paper: 1.0 against 0.1)
    optimizer: str = "adam"  # adam | nadam
    betas: tuple[float, float] = (0.9, 0.999)
    cosine: bool = True  # anneal the learning rate to 0 over the steps
    tv_weight: float = 0.0  # total variation penalty on the augmented batch
    canvas_scale: float = 1.0  # canvas side / model input side (MACO optimizes a larger canvas and crops it)
    view_frac: float = 1.0  # the returned image is the centre crop of this fraction of the canvas side
    phases: tuple[Phase, ...] = ()  # cheaper early steps; the steps after the last phase run at full size
    plateau: Plateau | None = None  # stop features whose objective has stopped rising
    grid_free: bool = False  # Fourier images without the patch grid's frequencies (no ripple on the patch grid)
    description: str = ""

    def learning_rate(self, is_clip: bool) -> float:
        return self.lr_clip if is_clip else self.lr

    def canvas_size(self, input_size: int) -> int:
        return int(round(input_size * self.canvas_scale))

    def phase_at(self, step: int, steps: int) -> Phase:
        """The phase a step belongs to (steps after the last listed phase: full size, the recipe's copies)."""
        for phase in self.phases:
            if step < phase.until * steps:
                return phase if phase.copies else dataclasses.replace(phase, copies=self.copies)
        return Phase(1.0, 1.0, self.copies)

    def compute(self, steps: int | None = None) -> float:
        """Model work of a render in image-steps at full size (tokens scale with the side squared)."""
        steps = self.steps if steps is None else steps
        return sum(p.copies * p.scale**2 for p in (self.phase_at(s, steps) for s in range(steps)))

    def param_options(self, canvas: int, patch_size: int) -> dict:
        """What the parametrization needs to know of the model: the patch grid's size on the canvas, for a
        grid-free image (only where the canvas is the model's input cut into whole patches)."""
        fourier = self.parametrization.startswith("fourier")
        if self.grid_free and fourier and canvas % patch_size == 0 and canvas // patch_size >= 4:
            return {"patch_grid": canvas // patch_size}
        return {}

    def view(self, canvas: Tensor) -> Tensor:
        """The image a user gets from the optimized canvas: its centre `view_frac`. A canvas optimized through
        random crops must be returned at the crops' scale, or the model sees its evidence too small."""
        return T.centre_crop(canvas, int(round(canvas.shape[-1] * self.view_frac)))


def _lucid_fourier(name: str, *, copies: int, steps: int, description: str, phases: tuple[Phase, ...] = (),
                   parametrization: str = "fourier") -> Recipe:
    """Lucid's Fourier image, augmentations and learning rate, which fourier, fast, fast-std and tuned share: they
    differ only in how much they spend, whether the saved image itself is optimized and whether the image is
    standardized."""
    return Recipe(name=name, parametrization=parametrization, build_transforms=T.lucid_transforms, copies=copies,
                  steps=steps, lr=0.05, lr_clip=0.05, phases=phases, description=description)


# The recipes by name are registries.RECIPES; these are its targets.
PAPER = Recipe(
    name="paper",
    parametrization="pixel",
    build_transforms=lambda canvas, size: T.paper_transforms(canvas),
    copies=8,
    steps=400,
    lr=0.1,
    lr_clip=1.0,
    betas=(0.5, 0.99),
    tv_weight=0.0005 * 1.0,
    description="Ghiasi et al. 2022: pixels, 8 copies with colour shift, decaying noise and roll jitter, TV, Adam.",
)
FOURIER = _lucid_fourier(
    "fourier", copies=4, steps=512,
    description="Lucid: 1/f Fourier image with colour decorrelation; pad, jitter, scale, rotate; Adam lr 0.05.",
)
MACO = Recipe(
    name="maco",
    parametrization="maco",
    build_transforms=lambda canvas, size: T.maco_transforms(size),
    copies=8,
    steps=256,
    lr=1.0,
    lr_clip=1.0,
    optimizer="nadam",
    cosine=False,
    canvas_scale=2.0,
    view_frac=0.5,  # crops span 0.25-0.75 of the canvas: the centre half is what the model saw at 1:1 on average
    description="MACO (Fel et al. 2023): phase-only Fourier with a natural magnitude spectrum, random crops, NAdam; "
    "returns the centre half of its 2x canvas, at the scale its crops were seen.",
)
FAST = _lucid_fourier(
    "fast", copies=2, steps=128, phases=(Phase(0.5), Phase(1.0, clean=True)),
    description="Lucid's Fourier image, 128 steps x 2 copies (8% of the paper's work); in the second half each "
    "feature's first copy is the un-augmented image, so the image that is saved is itself optimized while the "
    "other copy keeps it robust. Chosen by benchmarks/bench_speed.py: on the trained fixtures it beats the paper "
    "recipe's activation ratio and transfer.",
)
FAST_STD = _lucid_fourier(
    "fast-std", copies=2, steps=128, parametrization="fourier-std",
    description="fast's budget (128 steps x 2 copies) on the standardized Fourier image (photo contrast by "
    "construction) and without the un-augmented copy. On the real DINOv2-S/14 (block 6, benchmarks/bench_real.py) "
    "its images keep photos' contrast and colour and are more plausible and more robust than fast's.",
)
TUNED = _lucid_fourier(
    "tuned", copies=4, steps=800, phases=(Phase(1.0, clean=True),),
    description="Lucid's Fourier image at the paper's compute (800 steps x 4 copies); each feature's first copy "
    "is the un-augmented image, so the image that is saved is itself optimized.",
)


def get_recipe(recipe: str | Recipe) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else RECIPES.get(recipe)
