"""Procedural shapes: a labelled image set generated on the fly, so models can be trained and judged offline.

Each image holds one shape of six kinds at a random position, size and rotation on a textured background
(smooth noise, stripes or a gradient, plus grain), with its class, bounding box and pixel mask. Two variants:
"color" gives every class its own colour, so colour alone tells the class; "shape" draws colours at random, so
only the outline does. A visualization that "transfers" on the shape variant must have drawn a shape, not a colour.
Numpy only and vectorized per image: thousands of 64 px images per second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPE_CLASSES = ("disc", "square", "triangle", "ring", "bar", "cross")
VARIANTS = ("color", "shape")
CUE_CONFLICT = "cue-conflict"  # shapes_dataset's name for generate_cue_conflict's images

# Per-class colours of the "color" variant (RGB in [0, 1]): saturated and far apart.
CLASS_COLORS = np.array([
    (0.90, 0.10, 0.10),  # disc: red
    (0.10, 0.70, 0.15),  # square: green
    (0.15, 0.25, 0.95),  # triangle: blue
    (0.95, 0.85, 0.10),  # ring: yellow
    (0.85, 0.15, 0.85),  # bar: magenta
    (0.10, 0.85, 0.90),  # cross: cyan
])
COLOR_JITTER = 0.06  # per-channel jitter of the class colour: the colour stays a clean cue
MIN_CONTRAST = 0.45  # shape colour vs background mean colour (Euclidean, RGB in [0, 1])
RADIUS_RANGE = (0.15, 0.32)  # shape radius as a fraction of the image size
GRAIN = 0.03  # std of the per-pixel noise over the whole image


@dataclass(frozen=True)
class ShapeSet:
    """Images with their labels, boxes (x0, y0, x1, y1; x1/y1 exclusive) and masks (the shape's pixels)."""

    images: np.ndarray  # uint8 [N, size, size, 3]
    labels: np.ndarray  # int64 [N]
    boxes: np.ndarray  # int64 [N, 4]
    masks: np.ndarray  # bool [N, size, size]
    class_names: tuple[str, ...] = SHAPE_CLASSES
    cues: np.ndarray | None = None  # int64 [N]: the colour's class, in cue-conflict sets (generate_cue_conflict)

    def __len__(self) -> int:
        return len(self.labels)


def generate_shapes(count: int, *, variant: str = "shape", size: int = 64, seed: int = 0) -> ShapeSet:
    """`count` images of `size` px, deterministic in `seed`; classes are balanced and shuffled."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
    if count < 0 or size < 16:
        raise ValueError("count must be >= 0 and size >= 16")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % len(SHAPE_CLASSES)).astype(np.int64)
    images = np.empty((count, size, size, 3), np.uint8)
    masks = np.empty((count, size, size), bool)
    boxes = np.empty((count, 4), np.int64)
    grid = _Grid(size)
    for i, label in enumerate(labels):
        images[i], masks[i] = _draw(rng, grid, int(label), variant, int(label))
        boxes[i] = _box(masks[i])
    return ShapeSet(images=images, labels=labels, boxes=boxes, masks=masks)


def generate_cue_conflict(count: int, *, size: int = 64, seed: int = 0) -> ShapeSet:
    """Cue-conflict images (Geirhos et al. 2019) for the shapes models: a shape of one class drawn in the colour
    another class has in the "color" variant, on the same backgrounds. `labels` is the shape's class, `cues` the
    colour's; the 30 ordered pairs of different classes come equally often, shuffled, deterministic in `seed`."""
    if count < 0 or size < 16:
        raise ValueError("count must be >= 0 and size >= 16")
    rng = np.random.default_rng(seed)
    pairs = np.array([(s, c) for s in range(len(SHAPE_CLASSES)) for c in range(len(SHAPE_CLASSES)) if s != c])
    labels, cues = pairs[rng.permutation(np.arange(count) % len(pairs))].T.astype(np.int64).reshape(2, count)
    images = np.empty((count, size, size, 3), np.uint8)
    masks = np.empty((count, size, size), bool)
    boxes = np.empty((count, 4), np.int64)
    grid = _Grid(size)
    for i, (label, cue) in enumerate(zip(labels, cues)):
        images[i], masks[i] = _draw(rng, grid, int(label), "color", int(cue))
        boxes[i] = _box(masks[i])
    return ShapeSet(images=images, labels=labels, boxes=boxes, masks=masks, cues=cues)


def _draw(rng: np.random.Generator, grid: "_Grid", label: int, variant: str, color_label: int):
    """(uint8 image, mask) of one shape of class `label` coloured as `color_label` is in `variant`."""
    background = _background(rng, grid)
    mask = _shape_mask(rng, grid, label)
    color = _shape_color(rng, variant, color_label, background[::4, ::4].reshape(-1, 3).mean(0))
    shading = 1.0 + 0.08 * (grid.x * rng.uniform(-1, 1) + grid.y * rng.uniform(-1, 1))  # a little light
    image = np.where(mask[..., None], color * shading[..., None], background)
    image += rng.standard_normal(image.shape, dtype=np.float32) * GRAIN
    np.clip(image * 255.0 + 0.5, 0, 255, out=image)
    return image, mask


def shapes_dataset(count: int, *, variant: str = "shape", size: int = 64, seed: int = 0):
    """The same images as a `datasets.Dataset`: `image` (Image), `label` (ClassLabel), `bbox` ([x0, y0, x1, y1]).
    Variant CUE_CONFLICT: `generate_cue_conflict`'s images with two label columns, `shape` and `color`."""
    import datasets
    from PIL import Image

    if variant == CUE_CONFLICT:
        return _cue_conflict_dataset(generate_cue_conflict(count, size=size, seed=seed))
    shapes = generate_shapes(count, variant=variant, size=size, seed=seed)
    features = datasets.Features({
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(SHAPE_CLASSES)),
        "bbox": datasets.List(datasets.Value("int64"), length=4),
    })
    return datasets.Dataset.from_dict(
        {
            "image": [Image.fromarray(image) for image in shapes.images],
            "label": shapes.labels.tolist(),
            "bbox": shapes.boxes.tolist(),
        },
        features=features,
    )


def _cue_conflict_dataset(shapes: ShapeSet):
    import datasets
    from PIL import Image

    label = datasets.ClassLabel(names=list(SHAPE_CLASSES))
    features = datasets.Features({"image": datasets.Image(), "shape": label, "color": label,
                                  "bbox": datasets.List(datasets.Value("int64"), length=4)})
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(image) for image in shapes.images], "shape": shapes.labels.tolist(),
         "color": shapes.cues.tolist(), "bbox": shapes.boxes.tolist()},
        features=features,
    )


class _Grid:
    """Pixel-centre coordinates in [-1, 1] and smooth-noise upsampling matrices, built once per size."""

    def __init__(self, size: int):
        centres = (np.arange(size) + 0.5) / size * 2.0 - 1.0
        self.size = size
        self.y, self.x = np.meshgrid(centres, centres, indexing="ij")
        self._upsample: dict[int, np.ndarray] = {}

    def upsample(self, cells: int) -> np.ndarray:
        """[size, cells] linear interpolation matrix from a coarse grid of `cells` points to the pixels."""
        if cells not in self._upsample:
            position = (np.arange(self.size) + 0.5) / self.size * (cells - 1)
            left = np.clip(np.floor(position).astype(int), 0, cells - 2)
            frac = position - left
            matrix = np.zeros((self.size, cells))
            matrix[np.arange(self.size), left] = 1.0 - frac
            matrix[np.arange(self.size), left + 1] = frac
            self._upsample[cells] = matrix
        return self._upsample[cells]


def _background(rng: np.random.Generator, grid: _Grid) -> np.ndarray:
    """A textured background in [0, 1]: smooth colour noise, stripes, or a gradient."""
    kind = rng.integers(3)
    base, other = rng.uniform(0.0, 1.0, (2, 3))
    if kind == 0:  # smooth noise: random colours on a coarse grid, interpolated
        cells = int(rng.integers(3, 7))
        up = grid.upsample(cells)
        coarse = base + rng.uniform(-0.35, 0.35, (cells, cells, 3))
        image = (up @ coarse.transpose(2, 0, 1) @ up.T).transpose(1, 2, 0)
    else:
        angle = rng.uniform(0.0, np.pi)
        along = grid.x * np.cos(angle) + grid.y * np.sin(angle)
        if kind == 1:  # stripes
            frequency = rng.uniform(2.0, 6.0)
            t = 0.5 + 0.5 * np.sin(np.pi * frequency * along + rng.uniform(0, 2 * np.pi))
            other = base + rng.uniform(-0.4, 0.4, 3)
        else:  # linear gradient
            t = (along + 1.0) / 2.0
        image = base + (other - base) * t[..., None]
    return np.clip(image, 0.0, 1.0)


def _shape_color(rng: np.random.Generator, variant: str, label: int, background_mean: np.ndarray) -> np.ndarray:
    """The class colour (jittered) in the "color" variant; a random colour that stands out otherwise."""
    if variant == "color":
        return np.clip(CLASS_COLORS[label] + rng.uniform(-COLOR_JITTER, COLOR_JITTER, 3), 0.0, 1.0)
    for _ in range(100):
        color = rng.uniform(0.0, 1.0, 3)
        if np.linalg.norm(color - background_mean) >= MIN_CONTRAST:
            return color
    return np.where(background_mean > 0.5, 0.0, 1.0)  # the opposite corner of the colour cube


def _shape_mask(rng: np.random.Generator, grid: _Grid, label: int) -> np.ndarray:
    """The pixels of one shape of class `label` at a random radius, position and rotation."""
    radius = rng.uniform(*RADIUS_RANGE) * 2.0  # in grid units ([-1, 1] spans the image)
    cx, cy = rng.uniform(-1.0 + radius, 1.0 - radius, 2)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = grid.x - cx, grid.y - cy
    u, v = (dx * cos + dy * sin) / radius, (-dx * sin + dy * cos) / radius  # shape frame, radius 1
    name = SHAPE_CLASSES[label]
    if name == "disc":
        mask = u * u + v * v <= 1.0
    elif name == "square":
        mask = np.maximum(np.abs(u), np.abs(v)) <= 0.7  # corners on the unit circle
    elif name == "triangle":  # equilateral, circumradius 1: inside all three edges at distance 0.5 from the centre
        mask = np.ones_like(u, bool)
        for k in range(3):
            theta = np.pi / 2 + k * 2.0 * np.pi / 3.0
            mask &= u * np.cos(theta) + v * np.sin(theta) <= 0.5
    elif name == "ring":
        r2 = u * u + v * v
        mask = (r2 <= 1.0) & (r2 >= 0.55**2)
    elif name == "bar":
        mask = (np.abs(u) <= 0.96) & (np.abs(v) <= 0.28)
    else:  # cross
        arm, reach = 0.28, 0.96
        mask = ((np.abs(u) <= reach) & (np.abs(v) <= arm)) | ((np.abs(v) <= reach) & (np.abs(u) <= arm))
    return mask


def _box(mask: np.ndarray) -> np.ndarray:
    """Tight pixel box of a mask: x0, y0, x1, y1 with x1/y1 exclusive."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.int64)
