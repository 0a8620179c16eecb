"""Image parametrizations: how the F images being optimized (one per feature) are built from fp32 parameters.

The parametrization decides which images are easy for the optimizer to reach: raw pixels (the paper), Lucid's
1/f-scaled Fourier coefficients (favours natural-looking low frequencies), or MACO's phase-only spectrum (the
magnitude is pinned to that of natural photos, so only structure, not energy, is optimized). Image i is initialized
from generators[i] only, so it does not depend on the other features in the batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .registries import PARAMETRIZATIONS  # noqa: F401  (the names live in registries.py; tests import them here)
from .transforms import draw

SPECTRUM_FILE = Path(__file__).resolve().parents[1] / "data" / "maco_spectrum.npz"

# Square root of ImageNet's colour correlation (Lucid): maps decorrelated channels to RGB.
COLOR_CORRELATION_SQRT = np.array(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32
)


def color_correlation_normalized() -> np.ndarray:
    """The matrix scaled so its largest column has norm 1 (Lucid), so recorrelation never amplifies."""
    return COLOR_CORRELATION_SQRT / np.linalg.norm(COLOR_CORRELATION_SQRT, axis=0).max()


def recorrelate_colors(image: Tensor, matrix: Tensor) -> Tensor:
    """Decorrelated channels [N, 3, H, W] -> RGB-correlated channels, rgb = matrix @ channels per pixel."""
    return torch.einsum("ij,njhw->nihw", matrix, image)


def _frequency_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (cycles per pixel) of an rfft2 grid: fy [H, 1] in fftfreq order, fx [1, W//2+1]."""
    return np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]


def patch_grid_lattice(size: int, patches: int) -> np.ndarray:
    """[size, size//2+1] True on the rfft2 bins of a ViT's patch grid (both frequencies within one bin of a multiple
    of `patches` cycles per image, the lowest frequencies excepted). A ripple with the patch's period lives only there:
    the patch embedding sees it as a constant per patch, so an optimizer can raise a feature through it without
    drawing anything; an image with no energy there cannot ripple on the grid."""
    cycles_y = np.rint(np.fft.fftfreq(size) * size).astype(int)[:, None]
    cycles_x = np.rint(np.fft.rfftfreq(size) * size).astype(int)[None, :]

    def near_grid(cycles):
        offset = np.abs(cycles) % patches
        return (offset <= 1) | (offset >= patches - 1)

    def near_zero(cycles):
        return np.abs(cycles) <= 1

    return near_grid(cycles_y) & near_grid(cycles_x) & ~(near_zero(cycles_y) & near_zero(cycles_x))


class ImageParametrization(nn.Module):
    """F square images of side `size` in [0, 1], built by forward(); after_step() runs after each optimizer step."""

    def __init__(self, num_images: int, size: int, generators: Sequence[torch.Generator]):
        super().__init__()
        if len(generators) != num_images:
            raise ValueError(f"need one generator per image: got {len(generators)} for {num_images} images")
        self.num_images, self.size = int(num_images), int(size)

    def forward(self) -> Tensor:  # [F, 3, size, size] in [0, 1]
        raise NotImplementedError

    def after_step(self) -> None:
        """Nothing by default: the parametrizations that end in a sigmoid are always in range."""


class PixelImage(ImageParametrization):
    """The paper's raw pixels, U[0, 1] at init and clamped to [0, 1] after every step."""

    def __init__(self, num_images: int, size: int, generators: Sequence[torch.Generator]):
        super().__init__(num_images, size, generators)
        self.pixels = nn.Parameter(draw(generators, 1, (3, size, size)))

    def forward(self) -> Tensor:
        return self.pixels

    @torch.no_grad()
    def after_step(self) -> None:
        self.pixels.clamp_(0.0, 1.0)


class FourierImage(ImageParametrization):
    """Lucid's Fourier parametrization: coefficients scaled by 1/f^decay so equal steps change all scales alike,
    decorrelated colours, sigmoid. Parameter: real and imaginary parts [F, 3, size, size//2+1, 2], N(0, sd) at init.
    """

    def __init__(
        self,
        num_images: int,
        size: int,
        generators: Sequence[torch.Generator],
        sd: float = 0.01,
        decay_power: float = 1.0,
        patch_grid: int | None = None,
    ):
        super().__init__(num_images, size, generators)
        fy, fx = _frequency_grid(size, size)
        frequency = np.sqrt(fy**2 + fx**2)
        scale = 1.0 / np.maximum(frequency, 1.0 / size) ** decay_power * size  # size = sqrt(w * h)
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.register_buffer("color_matrix", torch.from_numpy(color_correlation_normalized()))
        self.spectrum = nn.Parameter(sd * draw(generators, 1, (3, size, size // 2 + 1, 2), "normal"))
        keep = None if not patch_grid else torch.from_numpy(~patch_grid_lattice(size, patch_grid))
        self.register_buffer("grid_keep", keep)

    def without_patch_grid(self, image: Tensor) -> Tensor:
        """The finished image with its patch-grid frequencies taken out (when asked), in pixel space: taking them
        out of the spectrum before the sigmoid is not enough, as the sigmoid's harmonics put them back."""
        if self.grid_keep is None:
            return image
        spectrum = torch.fft.rfft2(image) * self.grid_keep
        return torch.fft.irfft2(spectrum, s=image.shape[-2:]).clamp(0.0, 1.0)

    @torch.no_grad()
    def start_from(self, images: Tensor, margin: float = 1 / 512) -> FourierImage:
        """Set the spectrum so that forward() returns `images` ([F, 3, size, size] in [0, 1]): the image as the
        starting point (feature accentuation) instead of noise. Each step of forward() is inverted (sigmoid,
        colour recorrelation, irfft2, the 1/f scale); values are first kept `margin` inside (0, 1), which the
        sigmoid never reaches: half an 8-bit level, so the 8-bit image comes back exactly."""
        if self.grid_keep is not None:
            raise ValueError("a grid-free Fourier image cannot start from an image: its patch-grid frequencies are cut")
        logits = torch.logit(images.float().clamp(margin, 1 - margin))
        decorrelated = recorrelate_colors(logits, torch.linalg.inv(self.color_matrix))
        spectrum = torch.fft.rfft2(decorrelated * 4.0) / self.scale
        self.spectrum.copy_(torch.stack([spectrum.real, spectrum.imag], dim=-1).to(self.spectrum.device))
        return self

    def forward(self) -> Tensor:
        spectrum = torch.complex(self.spectrum[..., 0], self.spectrum[..., 1]) * self.scale
        # torch's default irfft2 divides by h*w, as Lucid's tf.spectral.irfft2d does; /4 is Lucid's constant.
        image = torch.fft.irfft2(spectrum, s=(self.size, self.size)) / 4.0
        return self.without_patch_grid(torch.sigmoid(recorrelate_colors(image, self.color_matrix)))


class StandardizedFourierImage(FourierImage):
    """Lucid's Fourier image with MACO's standardization: before colour recorrelation and sigmoid, each image is
    brought to mean 0 and a fixed standard deviation, so its contrast is a photo's by construction (about 0.2 pixel
    std at `std` 1.5) however faint the optimized spectrum. Plain Fourier images of a real ViT drift grey (0.09)."""

    def __init__(self, num_images: int, size: int, generators: Sequence[torch.Generator], std: float = 1.5, **options):
        super().__init__(num_images, size, generators, **options)
        self.std = float(std)

    def forward(self) -> Tensor:
        spectrum = torch.complex(self.spectrum[..., 0], self.spectrum[..., 1]) * self.scale
        image = torch.fft.irfft2(spectrum, s=(self.size, self.size))
        image = image - image.mean(dim=(1, 2, 3), keepdim=True)
        image = image * (self.std / (image.std(dim=(1, 2, 3), keepdim=True, correction=0) + 1e-8))
        return self.without_patch_grid(torch.sigmoid(recorrelate_colors(image, self.color_matrix)))


@dataclass(frozen=True)
class NaturalSpectrum:
    """Average |rfft2| of natural photos in decorrelated colour space, as built by scripts/build_maco_spectrum.py."""

    magnitude: np.ndarray  # [3, size, size//2+1] float64, numpy rfft2 layout
    alpha: np.ndarray  # [3] fitted power law |X| ~ f^-alpha per channel
    size: int


@functools.cache
def load_natural_spectrum(path: str | Path = SPECTRUM_FILE) -> NaturalSpectrum:
    """Read the shipped spectrum (numpy only)."""
    with np.load(path) as data:
        return NaturalSpectrum(
            magnitude=data["magnitude"].astype(np.float64),
            alpha=data["alpha"].astype(np.float64),
            size=int(data["size"]),
        )


def _interpolate_axis(values: np.ndarray, source: np.ndarray, target: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation along one axis (source increasing), holding the end values outside its range."""
    index = np.clip(np.searchsorted(source, target) - 1, 0, len(source) - 2)
    weight = np.clip((target - source[index]) / (source[index + 1] - source[index]), 0.0, 1.0)
    shape = [1] * values.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    return np.take(values, index, axis) * (1 - weight) + np.take(values, index + 1, axis) * weight


def maco_magnitude(height: int, width: int | None = None, spectrum: NaturalSpectrum | None = None) -> np.ndarray:
    """The natural magnitude spectrum on the rfft2 grid of an image of height x width: [3, H, W//2+1] float32.

    Resizing keeps frequencies in cycles per pixel. The stored log-magnitude is first whitened by the fitted power
    law (log|X| + alpha log f, nearly flat, so it interpolates well and keeps the orientation structure), bilinearly
    interpolated, then the power law is put back; frequencies below the stored grid's lowest thus extrapolate as
    f^-alpha. Amplitudes scale as a stationary image's would: AC by sqrt(pixels), DC by pixels.
    """
    width = height if width is None else width
    spectrum = spectrum or load_natural_spectrum()
    alpha = spectrum.alpha[:, None, None]
    fy, fx = _frequency_grid(spectrum.size, spectrum.size)
    radius = np.hypot(fy, fx)
    radius[0, 0] = np.inf  # DC has no power law; fill it from its neighbours below
    whitened = np.log(spectrum.magnitude) + alpha * np.log(radius)
    near_dc = np.isfinite(radius) & (radius < 1.5 / spectrum.size)
    whitened[:, 0, 0] = whitened[:, near_dc].mean(axis=1)

    whitened = np.fft.fftshift(whitened, axes=1)  # rows by increasing fy
    source_fy = np.fft.fftshift(fy[:, 0])
    target_fy, target_fx = _frequency_grid(height, width)
    whitened = _interpolate_axis(whitened, source_fy, target_fy[:, 0], axis=1)
    whitened = _interpolate_axis(whitened, fx[0], target_fx[0], axis=2)

    target_radius = np.hypot(target_fy, target_fx)
    target_radius[0, 0] = 1.0
    pixels_ratio = height * width / spectrum.size**2
    magnitude = np.exp(whitened - alpha * np.log(target_radius)) * np.sqrt(pixels_ratio)
    magnitude[:, 0, 0] = spectrum.magnitude[:, 0, 0] * pixels_ratio
    return magnitude.astype(np.float32)


class MacoImage(ImageParametrization):
    """MACO (Fel et al. 2023): only the Fourier phase is optimized, U[-pi, pi] at init; the magnitude is fixed to
    the natural-image average, so the image keeps natural energy at every scale. spectrum -> irfft2 -> standardize
    per image -> colour recorrelation -> sigmoid. Pass `magnitude` ([3, size, size//2+1]) to use another spectrum.
    """

    def __init__(
        self,
        num_images: int,
        size: int,
        generators: Sequence[torch.Generator],
        magnitude: np.ndarray | Tensor | None = None,
    ):
        super().__init__(num_images, size, generators)
        magnitude = maco_magnitude(size) if magnitude is None else magnitude
        self.register_buffer("magnitude", torch.as_tensor(magnitude, dtype=torch.float32))
        self.register_buffer("color_matrix", torch.from_numpy(color_correlation_normalized()))
        u = draw(generators, 1, (3, size, size // 2 + 1))
        self.phase = nn.Parameter((2 * u - 1) * torch.pi)

    def decorrelated(self) -> Tensor:
        """The standardized image before colour recorrelation and sigmoid, [F, 3, size, size]."""
        spectrum = torch.complex(self.magnitude * torch.cos(self.phase), self.magnitude * torch.sin(self.phase))
        image = torch.fft.irfft2(spectrum, s=(self.size, self.size))
        image = image - image.mean(dim=(1, 2, 3), keepdim=True)
        return image / (image.std(dim=(1, 2, 3), keepdim=True, correction=0) + 1e-5)

    def forward(self) -> Tensor:
        return torch.sigmoid(recorrelate_colors(self.decorrelated(), self.color_matrix))
