"""Feature accentuation of a real image (issue 20, item 5): the Fourier image starts exactly at the image
(constructed), accentuation raises the feature on the built-in trained model while staying closer to the image than
a rendering from noise, and the CLI saves a gallery row that names the image's hash and the weight."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from vit_feature_viz import accentuate, render
from vit_feature_viz.cli import main
from vit_feature_viz.core.accentuate import early_distance
from vit_feature_viz.core.params import FourierImage
from vit_feature_viz.data.shapes import generate_shapes
from vit_feature_viz.images import to_pil
from vit_feature_viz.quality import feature_values, pointing_hit, saved_pixels
from vit_feature_viz.store.pages import open_gallery

LAYER, STEPS = 3, 12



@pytest.fixture(scope="module")
def photo(shapes, tmp_path_factory):
    """A generated shapes image as a PNG file, and the feature of block LAYER it drives most."""
    image = Image.fromarray(generate_shapes(1, variant="shape", size=shapes.image_size, seed=7).images[0])
    path = tmp_path_factory.mktemp("accentuate") / "disc.png"
    image.save(path)
    feature = int(feature_values(shapes, LAYER, shapes.preprocess(image)[None]).argmax())
    return path, feature


def test_fourier_image_starts_exactly_at_the_image():
    """Constructed: random 8-bit images with both ends of the range come back from the parametrization as they are."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    pixels[0, :, 0, 0], pixels[1, :, 5, 7] = 0, 255
    images = torch.from_numpy(pixels).float() / 255
    param = FourierImage(2, 32, [torch.Generator().manual_seed(i) for i in range(2)]).start_from(images)
    with torch.no_grad():
        out = param()
    assert (out - images).abs().max() <= 0.5 / 255 + 1e-6  # within half an 8-bit level (the value range's margin)
    for i in range(2):
        assert np.array_equal(np.asarray(to_pil(out[i])), pixels[i].transpose(1, 2, 0))


def test_zero_steps_return_the_image(shapes, photo):
    path, feature = photo
    result = accentuate(shapes, path, LAYER, feature, steps=0)
    assert np.array_equal(np.asarray(result.accentuated), np.asarray(result.original))
    assert np.array_equal(np.asarray(result.original), shapes.preprocess_uint8(Image.open(path)).permute(1, 2, 0).numpy())
    assert result.activation == pytest.approx(result.activation_init)
    assert result.pixel_mean_abs == 0 and result.early_distance == 0
    assert np.all(np.asarray(result.difference) == 128)  # grey: nothing changed
    assert result.image_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_accentuation_raises_the_feature_and_stays_closer_than_a_render(shapes, photo):
    """On the built-in trained model: the feature rises well above the image's own activation, while the
    accentuated image stays within a bound of the image (pixels and block 0) that a rendering from noise, which
    reaches a similar activation with more steps (README: Accentuation), is far beyond."""
    path, feature = photo
    result = accentuate(shapes, path, LAYER, feature, steps=STEPS)
    plain = render(shapes, LAYER, [feature], steps=STEPS, progress=False)[0]
    original, candidates = saved_pixels(shapes, [result.original]), saved_pixels(shapes, [result.accentuated, plain.image])
    values = feature_values(shapes, LAYER, torch.cat([original, candidates]))[:, feature]
    assert values[1] > 1.3 * values[0] > 0  # (at 12 steps the plain render is still below the image's own value)
    pixel = (candidates - original).abs().mean((1, 2, 3))
    early = early_distance(shapes, candidates, original.expand_as(candidates))
    assert pixel[0] < 0.1 < pixel[1], pixel
    assert early[0] < 0.5 < early[1], early
    assert result.pixel_mean_abs == pytest.approx(float(pixel[0]), abs=2e-3)  # the result reports what it did
    stronger = accentuate(shapes, path, LAYER, feature, steps=STEPS, weight=8)
    assert stronger.early_distance < result.early_distance  # the weight holds block 0 closer


def test_pointing_hit_is_the_top_increase_in_the_originals_top_patches():
    before = np.arange(16, dtype=float).reshape(4, 4)  # top 25%: patches 12-15
    rise_in_top = before.copy()
    rise_in_top[3, 1] += 10
    rise_elsewhere = before.copy()
    rise_elsewhere[0, 0] += 10
    assert pointing_hit(before, rise_in_top, 0.25)
    assert not pointing_hit(before, rise_elsewhere, 0.25)
    assert pointing_hit(before, rise_elsewhere, 0.25, increase=False)  # the map's top is still patch 15
    rise_elsewhere[0, 0] += 10
    assert not pointing_hit(before, rise_elsewhere, 0.25, increase=False)


def test_cli_writes_a_row_with_the_images_hash_and_weight(shapes, photo, tmp_path, capsys):
    path, feature = photo
    out = tmp_path / "gallery"
    code = main(["render", "vit-feature-viz/shapes-vit", "--layer", str(LAYER), "--features", str(feature),
                 "--accentuate", str(path), "--accentuate-weight", "2", "--steps", "2", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    name = f"feature-accentuated(disc.png sha256:{digest} weight 2)"
    gallery = open_gallery(str(out))
    entry = gallery.entry("vit-feature-viz/shapes-vit", LAYER, feature, name)
    assert entry.recipe == "accentuate" and entry.steps == 2 and entry.activation > entry.activation_init
    page = gallery.feature_page("vit-feature-viz/shapes-vit", LAYER, feature, name)
    assert any(digest in v.caption and "weight 2" in v.caption for v in page.visualizations)  # Explore's caption
    assert page.visualizations[0].patch_map is not None
