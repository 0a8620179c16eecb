"""Rows into their stored form: every column present, images as self-contained PNG bytes."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from datasets import Image, List
from PIL import Image as PILImage, UnidentifiedImageError

from ..errors import VizError
from ..images import to_pil

from .schema import FEATURES, merge_key

_PNG_MODES = {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}

MAX_IMAGE_PIXELS = 2048 * 2048  # a stored image larger than this (from its header) is refused, never decoded
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")  # what galleries store (PNG) or may hold; no other decoder is tried

def encode_row(row: dict) -> dict:
    """Turn a user row (PIL images, missing keys) into the stored form: every column, images as PNG bytes."""
    unknown = set(row) - set(FEATURES)
    if unknown:
        raise ValueError(f"Unknown gallery column(s) {sorted(unknown)}: allowed are {list(FEATURES)}.")
    merge_key(row)
    return {name: _encode_value(feat, row.get(name), name) for name, feat in FEATURES.items()}


def _encode_value(feat: Any, value: Any, name: str) -> Any:
    """Encode one value for ``feat``; lists become [] when missing so 'nothing new' is one representation."""
    if isinstance(feat, List):
        return [_encode_value(feat.feature, v, name) for v in (value if value is not None else [])]
    if value is None:
        return None
    if isinstance(feat, Image):
        return {"bytes": _png_bytes(value), "path": None}
    if feat.dtype == "string":
        return str(value)
    if feat.dtype.startswith("int"):
        return int(value)
    if feat.dtype.startswith("float"):
        return float(value)
    raise TypeError(f"Unhandled feature type for column {name}: {feat}")


def _png_bytes(value: Any) -> bytes:
    """Always PNG bytes: datasets would store a file-backed PIL image as a *path* (broken once pushed) and
    keep JPEGs as JPEG; we want self-contained, lossless shards."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        value = PILImage.open(io.BytesIO(value))
    elif isinstance(value, (str, os.PathLike)):
        value = PILImage.open(value)
    elif isinstance(value, np.ndarray):
        value = to_pil(value)
    if not isinstance(value, PILImage.Image):
        raise TypeError(f"Expected a PIL image, got {type(value).__name__}.")
    if value.mode not in _PNG_MODES:
        value = value.convert("RGBA" if "A" in value.getbands() else "RGB")
    buf = io.BytesIO()
    value.save(buf, format="PNG")
    return buf.getvalue()


def decode_image(value: Any, label: str, size: int | None = None) -> PILImage.Image | None:
    """A stored image ({'bytes': ...}) decoded within a pixel budget, shrunk to `size` px (if given) as it is
    decoded; None for an empty cell.

    The size in the header is checked against MAX_IMAGE_PIXELS before any pixel is decoded (whatever PIL's global
    PIL's Image.MAX_IMAGE_PIXELS says), a JPEG is decoded at a reduced scale (`draft`), and only PNG, JPEG and WebP
    decoders are tried: a decompression bomb in a gallery costs one line of error, not gigabytes."""
    data = value.get("bytes") if isinstance(value, dict) else value
    if not data:
        return None
    too_large = (f"The gallery {label} holds an image larger than {MAX_IMAGE_PIXELS // 2**20} megapixels, more "
                 "than this browser decodes: push it again with images of the size they were rendered at.")
    try:
        with PILImage.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise VizError(too_large.replace("an image larger than", f"a {image.width}x{image.height} image, "
                                                 "larger than"))
            if size:
                image.draft("RGB", (size, size))
                image.thumbnail((size, size))  # loads (a JPEG at its reduced scale), then shrinks
            image.load()
            return image.copy()
    except PILImage.DecompressionBombError:
        raise VizError(too_large) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise VizError(f"The gallery {label} holds an image that cannot be decoded: push it again.") from None
