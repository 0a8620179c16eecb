"""Pictures of CLS attention: per model, the scores of each head against chance as bars, then a few images with
the object's outline, the mean map and each head's map drawn over them (the inferno overlay of patch maps), as
one picture per model (a grid of small axes would cost matplotlib seconds)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from ..core.patchmap import heatmap_overlay
from ..images import to_pil

MAX_HEADS_DRAWN = 12
TILE = 96  # px of each drawn map in the strip the app shows


@dataclass
class ModelMaps:
    """What one model's part of the figure shows: its table rows (heads, then the mean) and example images."""

    name: str
    layer: int
    rows: list[dict]
    pixels: torch.Tensor  # uint8 [N, 3, S, S]
    maps: torch.Tensor  # [N, H + 1, gh, gw]: heads, then the mean
    masks: torch.Tensor  # bool [N, S, S]


def overlays(pixels: torch.Tensor, maps: torch.Tensor) -> list[Image.Image]:
    """The mean map, then each head's, over one image ([3, S, S] uint8 or [0, 1] floats)."""
    image = to_pil(pixels if pixels.dtype == torch.uint8 else (pixels * 255).round().to(torch.uint8))
    order = [maps.shape[0] - 1, *range(min(maps.shape[0] - 1, MAX_HEADS_DRAWN))]
    return [heatmap_overlay(image, maps[i].numpy()) for i in order]


def attention_strip(pixels: torch.Tensor, maps: torch.Tensor, title: str, mask: torch.Tensor | None = None,
                    labels: bool = True) -> Image.Image:
    """The overlays of one image side by side, labelled "mean" and "head N", each TILE px; with `mask`, the image
    with the object's outline comes first."""
    tiles = overlays(pixels, maps)
    names = [f"mean, {title}", *(f"head {i}" for i in range(len(tiles) - 1))]
    if mask is not None:
        tiles, names = [_outlined(pixels, mask), *tiles], ["image + box", *names]
    top = 14 if labels else 0
    strip = Image.new("RGB", (TILE * len(tiles), TILE + top), "white")
    draw = ImageDraw.Draw(strip)
    for position, (tile, name) in enumerate(zip(tiles, names)):
        strip.paste(tile.resize((TILE, TILE), Image.Resampling.BICUBIC), (position * TILE, top))
        if labels:
            draw.text((position * TILE + 2, 1), name, fill="black")
    return strip


def attention_figure(title: str, models: list[ModelMaps]) -> Figure:
    """For each model: bars of mass in box and pointing game per head and for the mean (chance dashed), then one
    strip per example image: the image with the object's outline, the mean map, each head's map."""
    mosaics = []
    for model in models:
        strips = [attention_strip(pixels, maps, f"block {model.layer}", mask, labels=index == 0)
                  for index, (pixels, maps, mask) in enumerate(zip(model.pixels, model.maps, model.masks))]
        mosaic = Image.new("RGB", (max(s.width for s in strips), sum(s.height for s in strips)), "white")
        for strip, top in zip(strips, np.cumsum([0] + [s.height for s in strips[:-1]])):
            mosaic.paste(strip, (0, int(top)))
        mosaics.append(mosaic)
    width = max(7.0, max(m.width for m in mosaics) / 100)
    heights = [h for m in mosaics for h in (2.4, m.height / m.width * width)]
    figure = Figure(figsize=(width, 0.6 + sum(heights)), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title, fontsize=12)
    grid = figure.add_gridspec(len(heights), 1, height_ratios=heights)
    for index, (model, mosaic) in enumerate(zip(models, mosaics)):
        _bars(figure.add_subplot(grid[2 * index]), model)
        axes = figure.add_subplot(grid[2 * index + 1])
        axes.imshow(np.asarray(mosaic))
        axes.set_axis_off()
    return figure


def _bars(axes, model: ModelMaps) -> None:
    names = [str(r["head"]) for r in model.rows]
    positions = np.arange(len(names))
    for offset, (key, chance, label) in enumerate((("mass_in_box", "chance_mass", "attention mass in box"),
                                                   ("pointing_game", "chance_pointing", "pointing game"))):
        xs = positions + (offset - 0.5) * 0.4
        axes.bar(xs, [r[key] for r in model.rows], 0.4, color=f"C{offset}", label=label)
        axes.hlines(model.rows[-1][chance], -0.5, len(names) - 0.5, colors=f"C{offset}", linestyles="--",
                    linewidth=0.9, label=f"{label}: chance")
    axes.set_xticks(positions)
    axes.set_xticklabels(names, fontsize=7)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("head", fontsize=8)
    axes.set_title(f"{model.name}, block {model.layer}: CLS attention against the object's box", fontsize=9)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, which reach 1
    axes.grid(axis="y", alpha=0.3)


def _outlined(pixels: torch.Tensor, mask: torch.Tensor) -> Image.Image:
    """The image with the bounding rectangle of its object drawn in white."""
    image = to_pil(pixels)
    rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
    if len(rows) and len(cols):
        ImageDraw.Draw(image).rectangle([int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])], outline="white")
    return image
