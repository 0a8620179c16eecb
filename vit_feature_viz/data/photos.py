"""Natural photos that ship inside installable packages: the reference a visualization is judged against.

Nothing can be downloaded here or in CI, but scikit-image carries seven colour photos (a person, a cat, a cup,
a rocket, a stained tissue, a deep-sky field, a retina) and scikit-learn two more (a temple, a flower). Random
crops of them at the model's size make a pool of natural images: the "best natural activation" a rendered image
must beat, and the contrast, colour and spectrum a picture should look like.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import VizError

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")


def shipped_photos() -> list[np.ndarray]:
    """Every colour photo the installed packages carry, [H, W, 3] uint8 (scikit-learn's only where installed)."""
    try:
        import skimage.data
    except ImportError:
        raise VizError("The natural photo pool needs scikit-image: pip install scikit-image.") from None
    photos = [np.asarray(getattr(skimage.data, name)())[..., :3] for name in SKIMAGE_PHOTOS]
    try:
        from sklearn.datasets import load_sample_images

        photos += [np.asarray(image) for image in load_sample_images().images]
    except ImportError:
        pass
    return photos


def photo_crops(size: int, count: int, *, seed: int = 0, scale: tuple[float, float] = (0.25, 1.0)) -> np.ndarray:
    """[count, size, size, 3] uint8: square crops of random position and side (a `scale` share of the photo's
    shorter side), resized to `size` with a bicubic filter. The same seed gives the same pool."""
    photos = shipped_photos()
    rng = np.random.default_rng(seed)
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        photo = photos[rng.integers(len(photos))]
        height, width = photo.shape[:2]
        side = max(8, int(min(height, width) * rng.uniform(*scale)))
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        out[i] = np.asarray(crop.resize((size, size), Image.BICUBIC))
    return out
