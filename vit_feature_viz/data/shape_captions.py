"""The words of the built-in shapes CLIP: its named colours, its prompts, and the pixel statistic that tells which of
those colours an image shows (so a text-prompt rendering can be judged by something other than the CLIP itself)."""

from __future__ import annotations

import re

import numpy as np

from .shapes import SHAPE_CLASSES

# The six colours shapes are painted in to train the shapes CLIP: hues 60 degrees apart, fully saturated.
SHAPE_COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.10, 0.10),
    "yellow": (0.92, 0.88, 0.10),
    "green": (0.10, 0.80, 0.15),
    "cyan": (0.10, 0.85, 0.90),
    "blue": (0.12, 0.22, 0.95),
    "magenta": (0.88, 0.12, 0.88),
}
COLOR_HUES = {name: hue for name, hue in zip(SHAPE_COLORS, (0, 60, 120, 180, 240, 300))}  # degrees
# A background is named by the nearest of these to its mean colour.
BACKGROUND_COLORS: dict[str, tuple[float, float, float]] = {
    **SHAPE_COLORS, "white": (0.9, 0.9, 0.9), "gray": (0.5, 0.5, 0.5), "black": (0.1, 0.1, 0.1),
}
SATURATION_FLOOR = 0.5  # pixels less saturated than this (HSV) say nothing about the hue


def shape_prompt(shape: str) -> str:
    return f"a photo of a {shape}"


def colour_prompt(colour: str) -> str:
    return f"something {colour}"


def object_prompt(colour: str, shape: str) -> str:
    """The prompt the text-prompt measurement renders: "a red disc"."""
    return f"a {colour} {shape}"


def caption_vocabulary(templates) -> set[str]:
    """Every word the templates can produce with the shapes, the colours and the background names."""
    words: set[str] = set(SHAPE_CLASSES) | set(SHAPE_COLORS) | set(BACKGROUND_COLORS)
    for template, _ in templates:
        words |= set(re.sub(r"\{\w+\}", " ", template).split())
    return words


def dominant_colour(image: np.ndarray) -> str | None:
    """Which named colour an image shows most: the hue histogram of its saturated, not-dark pixels (HSV saturation
    and value >= SATURATION_FLOOR), each pixel voting for the nearest of COLOR_HUES. None when no pixel is
    saturated. `image`: uint8 or float in [0, 1], [H, W, 3]."""
    rgb = np.asarray(image, dtype=np.float32)
    if rgb.max() > 1.0:
        rgb = rgb / 255.0
    rgb = rgb.reshape(-1, 3)
    high, low = rgb.max(1), rgb.min(1)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-8), 0.0)
    keep = (saturation >= SATURATION_FLOOR) & (high >= SATURATION_FLOOR)
    if not keep.any():
        return None
    r, g, b = rgb[keep].T
    hue = np.degrees(np.arctan2(np.sqrt(3.0) * (g - b), 2 * r - g - b)) % 360
    names = list(COLOR_HUES)
    centres = np.array([COLOR_HUES[n] for n in names], dtype=np.float32)
    distance = np.abs((hue[:, None] - centres[None] + 180) % 360 - 180)
    votes = np.bincount(distance.argmin(1), minlength=len(names))
    return names[int(votes.argmax())]
