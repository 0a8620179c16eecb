"""Patch-wise activation maps: where in an image a feature fires, drawn as a heatmap over the image.

Dataset images become model input through the checkpoint's own pipeline (`VisionModel.preprocess`), so scores,
stored example images and their patch maps all see exactly the pixels the model's own library would feed it; the
generic resize + centre crop (`images.fit_square`, `images.preprocess`) is the fallback for checkpoints without one.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..errors import VizError
from ..images import preprocess_uint8, to_pil, to_rgb
from ..models.base import VisionModel
from ..specs import parse_features
from .objectives import Channel, Objective, make_objective

# Inferno: dark-to-bright with monotonic lightness, readable in greyscale and by most colour-blind viewers.
COLORMAP_NAME = "inferno"
COLORMAP = (colormaps[COLORMAP_NAME](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)  # [256, 3]
MIN_LABELLED_SIZE = 48  # px: smaller overlays get the colour bar without its min/max labels


# --- drawing -------------------------------------------------------------------------------------------------
def heatmap_overlay(
    image: Image.Image,
    values: np.ndarray,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.55,
) -> Image.Image:
    """Per-patch `values` (grid_h, grid_w) upsampled to `image`, coloured with inferno, blended over it.

    Same size as `image`, with a colour bar on the right edge labelled with vmin and vmax (labels from 48 px
    up), so colours read as values. A constant map (vmin == vmax) draws the bottom colour, never dividing by 0.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"values must be a (grid_h, grid_w) array, not shape {values.shape}")
    image = to_rgb(image)
    low = float(np.nanmin(values)) if vmin is None else float(vmin)
    high = float(np.nanmax(values)) if vmax is None else float(vmax)
    span = high - low
    unit = (values - low) / span if np.isfinite(span) and span > 0 else np.zeros_like(values)
    unit = np.nan_to_num(unit, nan=0.0)
    smooth = Image.fromarray(unit.astype(np.float32)).resize(image.size, Image.Resampling.BICUBIC)
    levels = (np.clip(np.asarray(smooth), 0, 1) * 255).round().astype(np.uint8)
    colours = COLORMAP[levels].astype(np.float32)
    blended = (1 - alpha) * np.asarray(image, dtype=np.float32) + alpha * colours
    out = Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))
    _draw_colour_bar(out, low, high)
    return out


def _default_font(pixels: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=pixels)
    except (TypeError, ValueError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _draw_colour_bar(image: Image.Image, low: float, high: float) -> None:
    """A thin bar on the right edge, max colour at the top, with the max/min values written beside it."""
    width, height = image.size
    margin = max(1, height // 32)
    bar_width = max(2, width // 28)
    bar_height = height - 2 * margin
    if bar_height < 4:
        return
    left = width - margin - bar_width
    ramp = COLORMAP[np.linspace(255, 0, bar_height).round().astype(int)]  # [bar_height, 3]
    bar = Image.fromarray(np.repeat(ramp[:, None, :], bar_width, axis=1).astype(np.uint8))
    image.paste(bar, (left, margin))
    if height < MIN_LABELLED_SIZE:  # labels would cover most of a thumbnail and be unreadable anyway
        return
    draw = ImageDraw.Draw(image)
    font = _default_font(max(6, height // 14))
    for text, y, anchor in ((f"{high:.3g}", margin, "rt"), (f"{low:.3g}", height - margin, "rb")):
        position = (left - margin, y)
        try:
            draw.text(position, text, fill="white", font=font, anchor=anchor, stroke_width=1, stroke_fill="black")
        except ValueError:  # bitmap fonts support neither anchors nor strokes
            text_w, text_h = draw.textbbox((0, 0), text, font=font)[2:]
            top = y if anchor.endswith("t") else y - text_h
            draw.text((position[0] - text_w, top), text, fill="white", font=font)


# --- one image ------------------------------------------------------------------------------------------------
def patch_values_for(model: VisionModel, objective: Objective, pixels: torch.Tensor) -> torch.Tensor | None:
    """[B, grid_h, grid_w, C] per-patch values behind `objective` for preprocessed `pixels`; None if it has none."""
    if not isinstance(objective, Channel):
        raise VizError(
            f"Objective '{objective.name}' is a combination: patch maps need one of feature, neuron, cls or residual."
        )
    with torch.no_grad():
        acts = model.activations(pixels, objective.needs)
        values = objective.patch_values(acts)
    if values is None:
        return None
    grid_h, grid_w = acts.grid
    return values.float().reshape(values.shape[0], grid_h, grid_w, values.shape[-1]).cpu()


def patch_map(
    model: VisionModel, image: Image.Image, layer: int, feature: int, objective="feature", *, rendered: bool = False
) -> Image.Image:
    """Where `feature` of `layer` fires in `image`: its per-patch values over the picture the model saw.

    A photo goes through the checkpoint's own pipeline (`model.preprocess`); `rendered=True` marks an image
    the renderer made, which already is model input: it is only resized to the model's size, never cropped.
    """
    objective = make_objective(objective, layer)
    objective.check(model)
    features = parse_features(feature, objective.num_channels(model))
    if len(features) != 1:
        raise VizError(f"A patch map shows one feature, not {len(features)}: pass a single index such as {features[0]}.")
    return draw_patch_map(model, image, objective, features[0], rendered=rendered)


def draw_patch_map(model: VisionModel, image: Image.Image, objective: Objective, feature: int, *,
                   rendered: bool = False, display_px: int | None = None) -> Image.Image:
    """`patch_map` for an objective and a feature index already checked against `model` (a render plan, a scan
    target): drawn as they are, with no second check. `display_px`: the side it will be shown at, when larger than
    the model's input: the picture is enlarged first, so the heatmap and the colour bar's labels are drawn at
    that size (sharp) instead of being enlarged with the pixels."""
    image = ImageOps.exif_transpose(image)  # photos straight from a camera; datasets already does this on decode
    pixels = preprocess_uint8([image], model.image_size) if rendered else model.preprocess_uint8(image)[None]
    values = patch_values_for(model, objective, pixels.float() / 255)
    if values is None:
        raise VizError(f"Objective '{objective.name}' has no per-patch values to map", option="objective",
                       value=objective.name, fix="{option:use} feature (or neuron, cls, residual) for patch maps.")
    picture = to_pil(pixels[0])
    if display_px and display_px > max(picture.size):
        scale = display_px / max(picture.size)
        picture = picture.resize((round(picture.width * scale), round(picture.height * scale)),
                                 Image.Resampling.LANCZOS)
    return heatmap_overlay(picture, values[0, :, :, feature].numpy())

