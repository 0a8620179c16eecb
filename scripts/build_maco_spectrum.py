"""Build the natural-image magnitude spectrum that MacoImage keeps fixed (vit_feature_viz/data/maco_spectrum.npz).

MACO optimizes only the Fourier phase, so the magnitude must come from natural photos. We average |rfft2| over random
crops of scikit-image's bundled colour photos, in the same space MacoImage generates in: pixels minus 0.5 (sigmoid(0)
is mid-grey), mapped through the inverse of the colour recorrelation matrix. Crops are made periodic first (Moisan's
periodic + smooth decomposition) so the crop borders do not add a fake '+' of energy on the frequency axes.

Run once; needs scikit-image and Pillow (the package then reads the file with numpy only):
    python scripts/build_maco_spectrum.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vit_feature_viz.core.params import color_correlation_normalized  # noqa: E402

SIZE = 128
CROPS_PER_PHOTO = 64
MIN_SIDE_FRAC, MAX_SIDE_FRAC = 0.35, 1.0
SEED = 0
OUT = ROOT / "vit_feature_viz" / "data" / "maco_spectrum.npz"


def natural_photos() -> dict[str, np.ndarray]:
    """The colour photographs shipped inside scikit-image (no download needed)."""
    from skimage import data

    return {
        "astronaut": data.astronaut(),
        "coffee": data.coffee(),
        "chelsea": data.chelsea(),
        "rocket": data.rocket(),
        "stereo_motorcycle_left": data.stereo_motorcycle()[0],
    }


def random_crop(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (random side and position, random mirror) resized to SIZE, as floats in [0, 1]."""
    h, w = photo.shape[:2]
    side = int(rng.uniform(MIN_SIDE_FRAC, MAX_SIDE_FRAC) * min(h, w))
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = Image.fromarray(photo[top : top + side, left : left + side, :3])
    crop = crop.resize((SIZE, SIZE), Image.Resampling.BICUBIC)  # PIL antialiases when shrinking
    pixels = np.asarray(crop, dtype=np.float64) / 255.0
    return pixels[:, ::-1] if rng.random() < 0.5 else pixels


def periodic_component(channel: np.ndarray) -> np.ndarray:
    """Moisan (2011): remove the smooth part that the crop's wrap-around discontinuities create."""
    h, w = channel.shape
    boundary = np.zeros_like(channel)
    boundary[0, :] += channel[-1, :] - channel[0, :]
    boundary[-1, :] -= channel[-1, :] - channel[0, :]
    boundary[:, 0] += channel[:, -1] - channel[:, 0]
    boundary[:, -1] -= channel[:, -1] - channel[:, 0]
    qy = np.cos(2 * np.pi * np.fft.fftfreq(h))[:, None]
    qx = np.cos(2 * np.pi * np.fft.fftfreq(w))[None, :]
    denom = 2 * qy + 2 * qx - 4
    denom[0, 0] = 1.0
    smooth = np.fft.fft2(boundary) / denom
    smooth[0, 0] = 0.0
    return channel - np.real(np.fft.ifft2(smooth))


def fit_power_law(magnitude: np.ndarray) -> np.ndarray:
    """Per channel alpha of |X| ~ f^-alpha, fitted on log-spaced radial bins so every scale counts equally."""
    size = magnitude.shape[1]  # square crops: rfft2 grid is [size, size//2+1]
    radius = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :])
    edges = np.geomspace(1.0 / size, 0.5, 13)
    alphas = []
    for channel in np.log(magnitude):
        centres, means = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            ring = (radius >= lo) & (radius < hi)
            if ring.any():
                centres.append(np.log(radius[ring]).mean())
                means.append(channel[ring].mean())
        slope, _ = np.polyfit(centres, means, 1)
        alphas.append(-slope)
    return np.asarray(alphas, dtype=np.float32)


def main() -> None:
    rng = np.random.default_rng(SEED)
    to_decorrelated = np.linalg.inv(color_correlation_normalized().astype(np.float64)).T  # rows: rgb @ C^-T
    total = np.zeros((3, SIZE, SIZE // 2 + 1))
    photos = natural_photos()
    for photo in photos.values():
        for _ in range(CROPS_PER_PHOTO):
            decorrelated = (random_crop(photo, rng) - 0.5) @ to_decorrelated
            for c in range(3):
                total[c] += np.abs(np.fft.rfft2(periodic_component(decorrelated[:, :, c])))
    magnitude = total / (len(photos) * CROPS_PER_PHOTO)
    alpha = fit_power_law(magnitude)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        magnitude=magnitude.astype(np.float16),  # [3, SIZE, SIZE//2+1], numpy rfft2 layout, decorrelated channels
        alpha=alpha,
        size=np.int64(SIZE),
        photos=np.array(sorted(photos)),
        crops_per_photo=np.int64(CROPS_PER_PHOTO),
    )
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size / 1024:.0f} KiB), alpha per channel = {alpha.round(3)}")


if __name__ == "__main__":
    main()
