"""The image helpers every floor shares: PIL <-> tensor conversion and the generic resize + centre crop.

They sit at the bottom (no package imports) so models (preprocessing), the renderer, patch maps, galleries,
dataset scans and the app all convert pixels the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB at 8 bits; 16-bit and float greyscale are rescaled rather than clipped to white."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255 if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.round().astype(np.uint8))
    return image if image.mode == "RGB" else image.convert("RGB")


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """Shorter side resized to `size` (bicubic), then the centre `size` x `size` square: no distortion."""
    image = to_rgb(image)
    width, height = image.size
    scale = size / min(width, height)
    resized = (max(size, round(width * scale)), max(size, round(height * scale)))
    if resized != image.size:
        image = image.resize(resized, Image.Resampling.BICUBIC)
    left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """[3, H, W] uint8: a quarter of the memory of floats, and lossless for preprocessed images."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def to_pil(pixels) -> Image.Image:
    """The one conversion of pixels to a PIL image.

    A tensor is the package's own: [3, H, W], uint8, or floats in [0, 1] (clamped). Anything else is an array
    from a dataset (numpy, nested lists): [H, W, C], [C, H, W] or [H, W]; uint8 as is, other numbers read as
    [0, 1] when none exceeds 1 and as [0, 255] otherwise."""
    if isinstance(pixels, torch.Tensor):
        pixels = pixels.detach().cpu()
        if pixels.dtype != torch.uint8:
            pixels = (pixels.float().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            return Image.fromarray(pixels)
        return Image.fromarray(pixels.permute(1, 2, 0).numpy())
    array = np.asarray(pixels)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        array = array * 255 if array.max(initial=0) <= 1 else array
        array = array.clip(0, 255).round().astype(np.uint8)
    return Image.fromarray(array)


def preprocess_uint8(images: list[Image.Image], size: int) -> torch.Tensor:
    """Images -> [B, 3, size, size] uint8 by `fit_square` (the generic fallback; `/ 255` gives model input)."""
    if not images:
        return torch.empty(0, 3, size, size, dtype=torch.uint8)
    return torch.stack([pil_to_uint8(fit_square(image, size)) for image in images])


def preprocess(images: list[Image.Image], size: int) -> torch.Tensor:
    """Images -> [B, 3, size, size] floats in [0, 1] (models normalize inside `activations`)."""
    return preprocess_uint8(images, size).float() / 255
