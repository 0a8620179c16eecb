"""What the eye sees: each measure of vit_feature_viz.quality's fourth part on a constructed case it must catch,
then the whole report on a trained shapes model against crops of the photos that ship with scikit-image."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vit_feature_viz.data
from vit_feature_viz import load_model
from vit_feature_viz.data.photos import photo_crops
from vit_feature_viz.quality import (
    colourfulness,
    contrast,
    feature_values,
    judge_looks,
    jittered_views,
    patch_grid_energy,
    photo_range,
    plausibility,
    robust_values,
    saved_pixels,
    uint8_to_pixels,
)

TRAINED = Path(vit_feature_viz.data.__file__).parent / "models" / "shapes-shape-vit-a"


@pytest.fixture(scope="module")
def photos224():
    return uint8_to_pixels(photo_crops(224, 48, seed=0))


def _grid(size):
    return torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")


def _correlation_with(template):
    """A stand-in feature that fires on one exact picture: the correlation of an image with `template`."""
    flat = (template - template.mean()).flatten()
    flat = flat / flat.norm()

    def value_of(pixels):
        centred = pixels.flatten(1) - pixels.flatten(1).mean(1, keepdim=True)
        return (centred @ flat / centred.norm(dim=1).clamp(min=1e-9)).numpy()

    return value_of


def test_robustness_catches_a_fit_to_exact_pixel_positions():
    """Pixel noise matched to its detector scores 1 where it stands and little once shifted by a few pixels; a
    smooth blob keeps most of its score."""
    y, x = _grid(64)
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    blob = torch.exp(-((x - 32) ** 2 + (y - 32) ** 2) / (2 * 10**2)).expand(1, 3, 64, 64).contiguous()
    for image, kept in ((noise, lambda v: v < 0.3), (blob, lambda v: v > 0.8)):
        value_of = _correlation_with(image[0])
        assert value_of(image)[0] == pytest.approx(1.0, abs=1e-5)
        assert kept(robust_values(value_of, image, views=8, max_shift=7)[0])


def test_jittered_views_move_the_image_and_keep_its_range():
    image = torch.rand(2, 3, 32, 32)
    views = jittered_views(image, 4, max_shift=3, seed=1)
    assert len(views) == 4 and all(v.shape == image.shape and 0 <= v.min() and v.max() <= 1 for v in views)
    assert not any(torch.equal(v, image) for v in views)
    assert all(torch.equal(a, b) for a, b in zip(views, jittered_views(image, 4, max_shift=3, seed=1)))


def test_a_ripple_on_the_patch_grid_scores_far_above_photos(photos224):
    """A faint ripple with a 14 px period (3% amplitude, what a ViT-S/14's patch grid can leave) added to photos
    multiplies their grid energy; a smooth blob has none."""
    y, x = _grid(224)
    ripple = 0.03 * (torch.sin(2 * np.pi * x / 14) + torch.sin(2 * np.pi * y / 14))
    photos = np.median(patch_grid_energy(photos224, 14))
    rippled = np.median(patch_grid_energy((photos224 + ripple).clamp(0, 1), 14))
    assert photos < 0.03 and rippled > 4 * photos
    blob = torch.exp(-((x - 112) ** 2 + (y - 112) ** 2) / (2 * 30**2)).expand(1, 3, 224, 224)
    assert patch_grid_energy(blob, 14)[0] < 1e-4


def test_grey_low_contrast_images_fall_below_the_photos_range(photos224):
    low_contrast, high_contrast = photo_range(contrast(photos224))
    low_colour, high_colour = photo_range(colourfulness(photos224))
    assert 0.05 < low_contrast < high_contrast < 0.45 and 0.01 < low_colour < high_colour
    grey = (0.5 + 0.03 * torch.randn(4, 1, 224, 224, generator=torch.Generator().manual_seed(0))).expand(4, 3, 224, 224)
    assert (contrast(grey) < low_contrast).all() and (colourfulness(grey) < 1e-6).all()
    saturated = torch.zeros(1, 3, 224, 224)
    saturated[:, 0, :112], saturated[:, 2, 112:] = 1, 1  # half red, half blue
    assert colourfulness(saturated)[0] > high_colour and contrast(saturated)[0] > high_contrast


def test_plausibility_is_the_mean_cosine_to_the_top_crops():
    references = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]])
    rendered = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    np.testing.assert_allclose(plausibility(rendered, references), [np.sqrt(0.5), 0.0], atol=1e-6)


@pytest.fixture(scope="module")
def trained():
    return load_model(str(TRAINED), device="cpu", precision="fp32")


def test_the_report_judges_a_photo_as_photos_and_noise_as_noise(trained):
    """The best photo of a feature, offered as its "visualization", scores ratio 1, lies in the photos' contrast
    and colour range and is plausible above chance; uniform noise is far less plausible."""
    photos = photo_crops(trained.image_size, 96, seed=3)
    layer = 3
    values = feature_values(trained, layer, saved_pixels(trained, [Image.fromarray(p) for p in photos]))
    features = values.max(0).values.topk(3).indices.tolist()  # channels the photos do excite
    best = values[:, features].argmax(0).tolist()
    as_photo = judge_looks(trained, layer, features, [Image.fromarray(photos[i]) for i in best], photos,
                           top_crops=4, views=2)
    np.testing.assert_allclose(as_photo.ratios, 1.0, rtol=1e-4)
    noise = np.random.default_rng(0).integers(0, 256, (3, trained.image_size, trained.image_size, 3), dtype=np.uint8)
    as_noise = judge_looks(trained, layer, features, [Image.fromarray(n) for n in noise], photos, top_crops=4, views=2)
    assert np.mean(as_photo.plausibility) > as_photo.photo_plausibility > np.mean(as_noise.plausibility)
    assert (as_noise.colourfulness > as_photo.photo_colourfulness[1]).all()  # every pixel a random colour
    summary = as_photo.summary()
    assert set(summary) >= {"ratio", "robust_ratio", "grid_energy", "photo_grid_energy", "contrast", "colourfulness",
                            "plausibility", "photo_plausibility"}
    assert all(np.isfinite(v) for v in summary.values())

