"""Image parametrizations and augmentations: shapes, ranges, gradients, per-feature independence, the MACO spectrum."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vit_feature_viz.core import transforms as T
from vit_feature_viz.core.params import (
    PARAMETRIZATIONS,
    SPECTRUM_FILE,
    MacoImage,
    PixelImage,
    load_natural_spectrum,
    maco_magnitude,
)

ROOT = Path(__file__).resolve().parents[1]


def generators(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def all_transforms(size=48):
    return {
        "color_shift": T.ColorShift(),
        "noise": T.DecayingNoise(),
        "roll": T.Roll(5),
        "pad": T.Pad(4),
        "jitter": T.Jitter(3),
        "scale": T.RandomScale((0.9, 1.1)),
        "rotate": T.RandomRotate(10.0),
        "scale_rotate": T.RandomScaleRotate(),
        "crops": T.RandomCrops(32),
        "resize": T.Resize(40),
        "paper": T.paper_transforms(size),
        "lucid": T.lucid_transforms(size, 32),
        "maco": T.maco_transforms(32),
    }


@pytest.mark.parametrize("name", sorted(PARAMETRIZATIONS))
@pytest.mark.parametrize("size", [32, 48, 224])
def test_parametrization_shape_range_and_gradient(name, size):
    image_param = PARAMETRIZATIONS[name](2, size, generators([0, 1]))
    image = image_param()
    assert image.shape == (2, 3, size, size) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1
    assert image.std() > 0
    image.square().sum().backward()
    (parameter,) = list(image_param.parameters())
    assert parameter.dtype == torch.float32
    assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_pixel_after_step_clamps():
    image_param = PixelImage(1, 8, generators([0]))
    with torch.no_grad():
        image_param.pixels.mul_(3).sub_(1)
    image_param.after_step()
    assert image_param().min() == 0 and image_param().max() == 1


@pytest.mark.parametrize("name", sorted(PARAMETRIZATIONS))
def test_init_does_not_depend_on_batch_mates(name):
    alone = PARAMETRIZATIONS[name](1, 32, generators([7]))()
    together = PARAMETRIZATIONS[name](3, 32, generators([3, 7, 11]))()
    torch.testing.assert_close(together[1:2], alone, atol=1e-6, rtol=0)
    assert not torch.allclose(together[0], together[1])


def test_global_rng_is_untouched():
    state = torch.get_rng_state()
    for name, cls in PARAMETRIZATIONS.items():
        cls(2, 16, generators([0, 1]))()
    x = torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    for transform in all_transforms().values():
        transform(x, generators([0, 1]), 2, 0, 10)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("name", sorted(all_transforms()))
def test_transform_does_not_depend_on_batch_mates(name):
    copies = 3
    canvas = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    batch = canvas.repeat_interleave(copies, dim=0)  # feature-major
    transform = all_transforms()[name]
    together_gens, alone_gens = generators([5, 6, 7]), generators([6])
    for step in range(2):  # the second step checks that the streams stay aligned
        together = transform(batch, together_gens, copies, step, 4)
        alone = transform(batch[copies : 2 * copies], alone_gens, copies, step, 4)
        torch.testing.assert_close(together[copies : 2 * copies], alone, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", sorted(all_transforms()))
def test_transform_is_differentiable(name):
    x = torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(2), requires_grad=True)
    y = all_transforms()[name](x, generators([0, 1]), 2, 1, 4)
    assert y.shape[0] == 4
    y.sin().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_draw_shapes_and_kinds():
    assert T.draw(generators([0, 1, 2]), 4, (3, 1, 1)).shape == (12, 3, 1, 1)
    normal = T.draw(generators([0]), 1000, (), "normal")
    assert normal.min() < 0 and abs(normal.std() - 1) < 0.1
    with pytest.raises(ValueError):
        T.draw(generators([0]), 1, (), "poisson")


def test_decaying_noise_is_zero_at_last_step():
    x = torch.rand(4, 3, 8, 8)
    noise = T.DecayingNoise(0.5)
    assert noise.std(0, 400) == 0.5
    assert torch.equal(noise(x, generators([0, 1]), 2, 399, 400), x)
    assert not torch.equal(noise(x, generators([0, 1]), 2, 0, 400), x)


def test_roll_with_zero_shift_is_identity_and_shares_shift_across_copies():
    x = torch.rand(4, 3, 16, 16)
    assert torch.equal(T.Roll(0)(x, generators([0, 1]), 2, 0, 10), x)
    same = torch.rand(1, 3, 16, 16).repeat(4, 1, 1, 1)
    rolled = T.Roll(6)(same, generators([0, 1]), 2, 0, 10)
    assert torch.equal(rolled[0], rolled[1]) and torch.equal(rolled[2], rolled[3])
    assert T.scaled_shift(224) == 32 and T.scaled_shift(384) == 55


def test_output_sizes():
    x = torch.rand(2, 3, 48, 48)
    gens = generators([0, 1])
    assert T.Pad(12)(x, gens, 1, 0, 1).shape[-1] == 72
    assert T.Jitter(8)(x, gens, 1, 0, 1).shape[-1] == 40
    assert T.RandomCrops(20)(x, gens, 1, 0, 1).shape[-2:] == (20, 20)
    assert T.lucid_transforms(48, 32)(x, gens, 1, 0, 1).shape[-2:] == (32, 32)


def test_random_crop_of_a_full_frame_is_the_image():
    x = torch.rand(2, 3, 32, 32)
    crop = T.RandomCrops(32, min_frac=1.0, max_frac=1.0, noise_std=0.0)(x, generators([0, 1]), 1, 0, 1)
    torch.testing.assert_close(crop, x, atol=1e-5, rtol=0)


def test_total_variation():
    constant = torch.full((2, 3, 16, 16), 0.3, requires_grad=True)
    tv = T.total_variation(constant)
    assert tv.shape == (2,) and torch.all(tv == 0)
    tv.sum().backward()
    assert torch.isfinite(constant.grad).all()
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2).float().expand(1, 3, 16, 16)
    # horizontal and vertical differences are all +-1 (norm ~ 15.5 each); the diagonals vanish
    assert T.total_variation(checker).item() > 30


def test_spectrum_file_loads_without_skimage(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # any import of scikit-image now fails
    load_natural_spectrum.cache_clear()
    spectrum = load_natural_spectrum()
    assert spectrum.magnitude.shape == (3, spectrum.size, spectrum.size // 2 + 1)
    assert maco_magnitude(64).shape == (3, 64, 33)
    assert "skimage" not in (ROOT / "vit_feature_viz" / "core" / "params.py").read_text()
    with np.load(SPECTRUM_FILE) as data:
        assert data["magnitude"].dtype == np.float16


def test_spectrum_resizing_keeps_shape_and_scales_like_a_stationary_image():
    spectrum = load_natural_spectrum()
    np.testing.assert_allclose(maco_magnitude(spectrum.size), spectrum.magnitude, rtol=1e-3)
    big = maco_magnitude(2 * spectrum.size)
    # same frequency in cycles/pixel: index k at the stored size is index 2k at twice the size; AC grows by 2x
    k = np.arange(1, spectrum.size // 2 - 1)
    np.testing.assert_allclose(big[:, 2 * k, 0], 2 * spectrum.magnitude[:, k, 0], rtol=1e-3)
    assert np.all(big > 0) and np.all(np.isfinite(big))
    radial = big[0, 1 : spectrum.size, 0]
    assert np.all(np.diff(np.log(radial)) < 0.2)  # falls off smoothly, also below the stored grid's lowest frequency


@pytest.mark.parametrize("size", [128, 224])
def test_maco_image_follows_the_stored_spectrum(size):
    image = MacoImage(2, size, generators([0, 1])).decorrelated().detach()
    measured = torch.fft.rfft2(image).abs().numpy()
    expected = maco_magnitude(size)
    keep = np.ones(expected.shape[1:], dtype=bool)
    keep[0, 0] = False  # DC is removed by the standardization
    for one in measured:
        corr = np.corrcoef(np.log(one[:, keep] + 1e-8).ravel(), np.log(expected[:, keep]).ravel())[0, 1]
        assert corr > 0.9


def test_clean_first_copy_shows_the_model_the_returned_image():
    canvas = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
    batch = canvas.repeat_interleave(4, dim=0)
    out = T.CleanFirstCopy(T.lucid_transforms(48, 32), 32)(batch, generators, 4, 0, 10)
    resized = T.Resize(32)(canvas, generators, 1, 0, 10)
    assert out.shape == (8, 3, 32, 32)
    assert torch.equal(out[0], resized[0]) and torch.equal(out[4], resized[1])  # each feature's first copy
    assert not torch.allclose(out[1], resized[0])  # the others are augmented
    centre = T.CleanFirstCopy(T.maco_transforms(32), 32, view_side=24)(batch, generators, 4, 0, 10)
    assert torch.allclose(centre[0], T.Resize(32)(T.centre_crop(canvas, 24), generators, 1, 0, 10)[0])


def test_centre_crop_keeps_the_middle():
    x = torch.arange(36.0).view(1, 1, 6, 6)
    assert T.centre_crop(x, 2).flatten().tolist() == [14.0, 15.0, 20.0, 21.0]
    assert T.centre_crop(x, 6) is not None and torch.equal(T.centre_crop(x, 6), x)


def test_standardized_fourier_images_have_a_photos_contrast_from_the_start():
    """Plain Fourier images start nearly flat (pixel std 0.003) and real ViTs leave them grey; the standardized
    ones hold a photo's pixel std (0.1-0.3) at init and after the spectrum is scaled down a hundredfold."""
    from vit_feature_viz.core.params import StandardizedFourierImage
    from vit_feature_viz.quality import contrast

    plain = PARAMETRIZATIONS["fourier"](2, 64, generators([0, 1]))().detach()
    standardized = StandardizedFourierImage(2, 64, generators([0, 1]))
    assert (contrast(plain) < 0.01).all()
    assert ((0.1 < contrast(standardized().detach())) & (contrast(standardized().detach()) < 0.3)).all()
    with torch.no_grad():
        before = standardized().clone()
        standardized.spectrum.mul_(0.01)
        torch.testing.assert_close(standardized(), before, atol=1e-5, rtol=1e-4)


def test_a_grid_free_fourier_image_cannot_ripple_on_the_patch_grid():
    """A spectrum pushed onto the patch grid's frequencies (what a ripple with the patch's period is) shows as
    patch-grid energy in a plain Fourier image and is taken out of a grid-free one, which keeps every other frequency
    (a ripple strong enough to saturate the sigmoid leaves a trace through the final clamp to [0, 1])."""
    from vit_feature_viz.core.params import StandardizedFourierImage, patch_grid_lattice
    from vit_feature_viz.quality import patch_grid_energy

    size, patch = 128, 8
    lattice = torch.from_numpy(patch_grid_lattice(size, size // patch))
    assert lattice[size // patch, size // patch] and lattice[0, 2 * size // patch] and not lattice[0, 0]
    assert not lattice[3, 5] and lattice.float().mean() < 0.1  # a sliver of the spectrum
    plain = StandardizedFourierImage(2, size, generators([0, 1]))
    free = StandardizedFourierImage(2, size, generators([0, 1]), patch_grid=size // patch)
    with torch.no_grad():
        for image in (plain, free):
            image.spectrum[:, :, lattice] *= 30  # the optimizer found the ripple
        rippled, clean = plain().detach(), free().detach()
    assert (patch_grid_energy(rippled, patch) > 0.5).all()
    assert (patch_grid_energy(clean, patch) < 0.02).all()  # photos: about 0.01
    assert not torch.equal(clean[0], clean[1])  # the rest of the spectrum still draws the image


def test_a_grid_free_recipe_renders_on_a_vit(tiny_repos):
    """The recipe passes the model's patch grid to the parametrization (render's path, not a hand-built image)."""
    import dataclasses

    from vit_feature_viz import load_model, render
    from vit_feature_viz.core.recipes import get_recipe

    tiny_vit = load_model(tiny_repos["vit"], device="cpu")
    recipe = dataclasses.replace(get_recipe("fast-std"), grid_free=True)
    assert recipe.param_options(64, 8) == {"patch_grid": 8} and get_recipe("paper").param_options(64, 8) == {}
    assert recipe.param_options(60, 8) == {}  # no whole-patch grid on the canvas: nothing to take out
    results = render(tiny_vit, 0, [0], recipe=recipe, steps=2, seed=0, progress=False)
    assert results[0].image.size == (tiny_vit.image_size, tiny_vit.image_size)
