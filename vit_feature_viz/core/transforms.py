"""Augmentations applied to every feature's copies each step, and the total-variation penalty.

Batches are feature-major: rows i*copies .. (i+1)*copies-1 are feature i's copies. Every random number for feature i
comes from generators[i] (a CPU generator), drawn in the same order every step, so a feature renders the same image
whichever features share its batch. Each transform draws its numbers even when a setting makes them unused (e.g.
noise std 0), so the random streams never shift. All transforms are differentiable in x.

Call signature of every transform: ``t(x, generators, copies, step, total_steps)``, with ``step`` counted from 0
and the last step being ``total_steps - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

_SAMPLERS = {"uniform": torch.rand, "normal": torch.randn}


def draw(generators: Sequence[torch.Generator], copies: int, shape: Sequence[int], kind: str = "uniform") -> Tensor:
    """Random numbers [F*copies, *shape] on the CPU; feature i's block comes from generators[i] only.

    ``uniform`` is U[0, 1), ``normal`` is N(0, 1).
    """
    if kind not in _SAMPLERS:
        raise ValueError(f"kind must be one of {sorted(_SAMPLERS)}, not {kind!r}")
    sampler = _SAMPLERS[kind]
    blocks = [sampler((copies, *shape), generator=g, dtype=torch.float32, device="cpu") for g in generators]
    return torch.cat(blocks)


def _uniform(generators, copies, shape, low: float, high: float, device) -> Tensor:
    return (low + (high - low) * draw(generators, copies, shape)).to(device)


def _integers(generators, copies, shape, low: int, high: int, device) -> Tensor:
    """Integers in [low, high] inclusive, from uniform draws (one float per integer keeps the stream simple)."""
    u = draw(generators, copies, shape)
    return (low + torch.floor(u * (high - low + 1)).clamp(max=high - low)).long().to(device)


def _check_batch(x: Tensor, generators: Sequence[torch.Generator], copies: int) -> None:
    if x.shape[0] != len(generators) * copies:
        raise ValueError(f"batch of {x.shape[0]} rows does not match {len(generators)} features x {copies} copies")


def _window(x: Tensor, top: Tensor, left: Tensor, height: int, width: int) -> Tensor:
    """Per-row integer window (wrapping around the edges), as one differentiable gather."""
    rows = (top[:, None] + torch.arange(height, device=x.device)) % x.shape[-2]
    cols = (left[:, None] + torch.arange(width, device=x.device)) % x.shape[-1]
    batch = torch.arange(x.shape[0], device=x.device)
    out = x[batch[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # advanced dims first: [N, h, w, C]
    return out.permute(0, 3, 1, 2)


def _affine_matrices(a: Tensor, b: Tensor, tx: Tensor, c: Tensor, d: Tensor, ty: Tensor) -> Tensor:
    """Per-row 2x3 matrices [[a, b, tx], [c, d, ty]] from per-row entries [N]."""
    return torch.stack([torch.stack([a, b, tx], -1), torch.stack([c, d, ty], -1)], 1)


def _affine(x: Tensor, theta: Tensor, out_size: tuple[int, int] | None = None) -> Tensor:
    """Bilinear resampling of each row with its own 2x3 affine matrix (normalized coordinates)."""
    height, width = out_size or x.shape[-2:]
    grid = F.affine_grid(theta.to(x.dtype), [x.shape[0], x.shape[1], height, width], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class ColorShift:
    """Paper: per copy and channel (x - m) / s, m ~ U(-mu, mu), s = exp(U(-log_sigma, log_sigma))."""

    def __init__(self, mu: float = 1.0, log_sigma: float = 1.0):
        self.mu, self.log_sigma = mu, log_sigma

    def __call__(self, x, generators, copies, step, total_steps):
        _check_batch(x, generators, copies)
        shift = _uniform(generators, copies, (x.shape[1], 1, 1), -self.mu, self.mu, x.device)
        log_scale = _uniform(generators, copies, (x.shape[1], 1, 1), -self.log_sigma, self.log_sigma, x.device)
        return (x - shift) * torch.exp(-log_scale)


class DecayingNoise:
    """Paper: one Gaussian value per copy and channel, std linear from start_std (step 0) to 0 (last step)."""

    def __init__(self, start_std: float = 0.5):
        self.start_std = start_std

    def std(self, step: int, total_steps: int) -> float:
        return self.start_std * max(0.0, 1.0 - step / max(total_steps - 1, 1))

    def __call__(self, x, generators, copies, step, total_steps):
        _check_batch(x, generators, copies)
        noise = draw(generators, copies, (x.shape[1], 1, 1), "normal").to(x.device)
        return x + self.std(step, total_steps) * noise


def scaled_shift(image_size: int, shift: int = 32, reference_size: int = 224) -> int:
    """The paper rolls up to 32 px at 224 px; keep the same fraction of the image at other sizes."""
    return round(shift * image_size / reference_size)


class Roll:
    """Paper's jitter: one random circular roll per feature per step, shared by its copies, |dx|,|dy| <= max_shift."""

    def __init__(self, max_shift: int):
        self.max_shift = int(max_shift)

    def __call__(self, x, generators, copies, step, total_steps):
        _check_batch(x, generators, copies)
        shift = _integers(generators, 1, (2,), -self.max_shift, self.max_shift, x.device)
        shift = shift.repeat_interleave(copies, dim=0)  # feature-major: the feature's copies share it
        height, width = x.shape[-2:]
        return _window(x, -shift[:, 0], -shift[:, 1], height, width)


class Pad:
    """Lucid: constant border (mid-grey) so that jitter, scale and rotation do not wrap or crop the subject."""

    def __init__(self, pixels: int = 12, value: float = 0.5):
        self.pixels, self.value = int(pixels), value

    def __call__(self, x, generators, copies, step, total_steps):
        p = self.pixels
        return F.pad(x, (p, p, p, p), mode="constant", value=self.value)


class Jitter:
    """Lucid: crop `pixels` rows and columns at a random offset per copy (output shrinks by `pixels`)."""

    def __init__(self, pixels: int):
        self.pixels = int(pixels)

    def __call__(self, x, generators, copies, step, total_steps):
        _check_batch(x, generators, copies)
        offset = _integers(generators, copies, (2,), 0, self.pixels, x.device)
        height, width = x.shape[-2:]
        return _window(x, offset[:, 0], offset[:, 1], height - self.pixels, width - self.pixels)


class RandomScaleRotate:
    """Lucid's random scale and rotation as one bilinear resampling per copy (one interpolation blurs less than two):
    zoom about the centre by U(scales) (>1 magnifies) and rotate by U(-max_degrees, max_degrees). Size is kept;
    meant for square images."""

    def __init__(self, scales: tuple[float, float] = (0.9, 1.1), max_degrees: float = 10.0):
        self.scales, self.max_degrees = tuple(scales), max_degrees

    def __call__(self, x, generators, copies, step, total_steps):
        _check_batch(x, generators, copies)
        scale = _uniform(generators, copies, (), *self.scales, x.device)
        angle = _uniform(generators, copies, (), -self.max_degrees, self.max_degrees, x.device) * (math.pi / 180)
        cos, sin, zeros = torch.cos(angle) / scale, torch.sin(angle) / scale, torch.zeros_like(angle)
        return _affine(x, _affine_matrices(cos, -sin, zeros, sin, cos, zeros))


class RandomScale(RandomScaleRotate):
    """Lucid's random scale alone: factor U(scales[0], scales[1])."""

    def __init__(self, scales: tuple[float, float] = (0.9, 1.1)):
        super().__init__(scales, 0.0)


class RandomRotate(RandomScaleRotate):
    """Lucid's random rotation alone (U(-max_degrees, max_degrees))."""

    def __init__(self, max_degrees: float = 10.0):
        super().__init__((1.0, 1.0), max_degrees)


class RandomCrops:
    """MACO: a random square crop per copy (side a fraction in [min_frac, max_frac] of the canvas, anywhere inside
    it), bilinearly resized to out_size, plus per-pixel Gaussian noise.

    noise_std is in [0, 1] pixel units: 0.04 equals MACO's 0.08 in its [-1, 1] value range.
    """

    def __init__(self, out_size: int, min_frac: float = 0.25, max_frac: float = 0.75, noise_std: float = 0.04):
        if not 0 < min_frac <= max_frac <= 1:
            raise ValueError("need 0 < min_frac <= max_frac <= 1")
        self.out_size, self.min_frac, self.max_frac, self.noise_std = int(out_size), min_frac, max_frac, noise_std

    def __call__(self, x, generators, copies, step, total_steps):
        _check_batch(x, generators, copies)
        frac = _uniform(generators, copies, (), self.min_frac, self.max_frac, x.device)
        position = _uniform(generators, copies, (2,), -1.0, 1.0, x.device)
        centre = position * (1 - frac)[:, None]  # keeps the crop inside the canvas
        zeros = torch.zeros_like(frac)
        theta = _affine_matrices(frac, zeros, centre[:, 0], zeros, frac, centre[:, 1])
        crops = _affine(x, theta, (self.out_size, self.out_size))
        noise = draw(generators, copies, (x.shape[1], self.out_size, self.out_size), "normal").to(x.device)
        return crops + self.noise_std * noise


class Resize:
    """Deterministic bilinear (antialiased when shrinking) resize to the model's input size."""

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, x, generators, copies, step, total_steps):
        if tuple(x.shape[-2:]) == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)


class CleanFirstCopy:
    """Each feature's first copy skips the augmentations and shows the model the image as it will be returned
    (its centre `view_side` pixels, at the model's input size), so the saved image itself is optimized, while the
    augmented copies keep it robust. The augmentations still draw for every copy, so random streams do not shift.
    """

    def __init__(self, augment, model_size: int, view_side: int | None = None):
        self.augment, self.resize, self.view_side = augment, Resize(model_size), view_side

    def __call__(self, x, generators, copies, step, total_steps):
        augmented = self.augment(x, generators, copies, step, total_steps)
        first = torch.arange(0, x.shape[0], copies, device=x.device)
        view = x[first] if self.view_side is None else centre_crop(x[first], self.view_side)
        return augmented.index_copy(0, first, self.resize(view, generators, 1, step, total_steps).to(augmented.dtype))


class Compose:
    """Apply transforms in order; their draws happen in that order too."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, x, generators, copies, step, total_steps):
        for transform in self.transforms:
            x = transform(x, generators, copies, step, total_steps)
        return x


def paper_transforms(image_size: int) -> Compose:
    """Ghiasi et al. 2022: colour shift, decaying noise, roll of up to 32 px at 224 px."""
    return Compose([ColorShift(), DecayingNoise(), Roll(scaled_shift(image_size))])


def lucid_transforms(canvas_size: int, model_size: int) -> Compose:
    """Lucid's standard set (pixel amounts given for its 128 px canvas, scaled to ours), then resize to the model."""

    def px(lucid_pixels: int) -> int:
        return max(1, round(lucid_pixels * canvas_size / 128))

    return Compose([Pad(px(12)), Jitter(px(8)), RandomScaleRotate(), Jitter(px(4)), Resize(model_size)])


def maco_transforms(model_size: int, **crop_options) -> Compose:
    """MACO: random crops of the large canvas resized to the model's input, with small noise."""
    return Compose([RandomCrops(model_size, **crop_options)])


def centre_crop(x: Tensor, side: int) -> Tensor:
    """The centre side x side square of [..., H, W] images (unchanged when they already are that size)."""
    height, width = x.shape[-2:]
    top, left = (height - side) // 2, (width - side) // 2
    return x[..., top : top + side, left : left + side]


def total_variation(x: Tensor) -> Tensor:
    """Paper's TV per image [N]: over horizontal, vertical and both diagonal differences, the L2 norm over pixels,
    averaged over channels, summed over the 4 directions. Per image so the renderer can average per feature."""
    differences = (
        x[..., :, 1:] - x[..., :, :-1],
        x[..., 1:, :] - x[..., :-1, :],
        x[..., 1:, 1:] - x[..., :-1, :-1],
        x[..., 1:, :-1] - x[..., :-1, 1:],
    )
    return sum(torch.linalg.vector_norm(d, dim=(-2, -1)).mean(dim=1) for d in differences)
