"""Quality metrics: their arithmetic on constructed cases, and their judging path on a real tiny checkpoint."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vit_feature_viz.data
from vit_feature_viz import load_model, render
from vit_feature_viz.quality import (
    activation_ratio,
    activation_ratios,
    box_patch_masks,
    box_selectivity,
    classify,
    median_ratio,
    png_roundtrip,
    pointing_hits,
    transfer,
    transfer_hits,
)
from vit_feature_viz.core.recipes import RECIPES


@pytest.fixture(scope="module")
def vit(tiny_repos):
    return load_model(tiny_repos["vit"], device="cpu")


def test_known_activations_give_known_ratios():
    ratios = activation_ratios([3.0, 1.0, 2.0, 5.0], [2.0, 2.0, 0.0, -1.0])
    assert ratios[:2].tolist() == [1.5, 0.5]
    assert np.isnan(ratios[2]) and np.isnan(ratios[3])  # no natural image excites those features: no ratio
    assert median_ratio(ratios) == 1.0  # median of the features that have a ratio
    assert np.isnan(median_ratio([np.nan]))


def test_png_roundtrip_is_lossless_for_8_bit_images():
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(png_roundtrip(Image.fromarray(pixels))), pixels)


def test_box_masks_mark_the_patches_a_box_overlaps():
    masks = box_patch_masks(np.array([[8, 8, 16, 16], [4, 4, 12, 12], [0, 0, 32, 8]]), image_size=32, patch_size=8)
    assert masks.shape == (3, 4, 4)
    assert np.argwhere(masks[0]).tolist() == [[1, 1]]  # exactly one patch; exclusive x1/y1 stop at its edge
    assert np.argwhere(masks[1]).tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert masks[2, 0].all() and not masks[2, 1:].any()


def test_a_map_peaked_inside_the_box_is_a_hit_and_outside_a_miss():
    masks = box_patch_masks(np.array([[8, 8, 24, 24]] * 2), image_size=32, patch_size=8)
    inside, outside = np.zeros((4, 4)), np.zeros((4, 4))
    inside[2, 1], outside[3, 3] = 5.0, 5.0
    assert pointing_hits(np.stack([inside, outside]), masks).tolist() == [True, False]


def test_selectivity_ranks_the_channel_that_fires_on_boxes_first():
    rng = np.random.default_rng(0)
    boxes = np.array([[x, y, x + 16, y + 16] for x, y in rng.integers(0, 17, (20, 2))])
    masks = box_patch_masks(boxes, 32, 8)
    noise = torch.from_numpy(rng.normal(0, 0.1, (20, 4, 4, 3))).float()
    on_box = torch.from_numpy(masks).float()
    values = noise + torch.stack([on_box, 1 - on_box, torch.zeros_like(on_box)], -1)  # box, background, nothing
    selectivity = box_selectivity(values, masks)
    assert selectivity.argmax() == 0 and selectivity[1] < 0 < selectivity[0]
    assert abs(selectivity[2]) < 0.5


def test_a_model_that_agrees_transfers_every_class():
    assert transfer_hits([0, 1, 2, 3, 4, 5], range(6)) == 6
    assert transfer_hits([0, 0, 2, 2, 4, 4], range(6)) == 3


def test_a_saved_image_compared_with_itself_has_ratio_one(vit):
    """The ratio re-measures the saved PNG exactly as it scores natural images: with the image itself as the only
    natural image, the ratio is 1; and the re-measured activation is the renderer's own up to 8-bit rounding."""
    recipe = dataclasses.replace(RECIPES["paper"], copies=1)
    for feature in (3, 9):
        saved = render(vit, 2, [feature], recipe=recipe, steps=0, progress=False)[0]
        report = activation_ratio(vit, 2, [feature], recipe, np.asarray(saved.image)[None], steps=0)
        assert report.features == [feature] and report.seconds_per_feature > 0
        assert report.rendered[0] == pytest.approx(saved.activation, abs=0.02)
        if report.natural_best[0] > 0:
            assert report.ratios.tolist() == pytest.approx([1.0], rel=1e-4) and report.median == pytest.approx(1.0, rel=1e-4)
        else:
            assert np.isnan(report.median)


def test_classify_reads_the_saved_image(vit):
    images = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (0, 128, 255)]
    with torch.no_grad():
        pixels = torch.stack([torch.from_numpy(np.asarray(i)).permute(2, 0, 1) for i in images]).float() / 255
        expected = vit.activations(pixels, {vit_logits()})[vit_logits()].argmax(1).tolist()
    assert classify(vit, images).tolist() == expected


def vit_logits():
    from vit_feature_viz.models.base import LOGITS, Target

    return Target(LOGITS)


def test_transfer_to_the_same_model_counts_its_own_classes(vit):
    """Model B = model A: a logit visualization optimized without augmentation is its own class, every time."""
    recipe = dataclasses.replace(RECIPES["paper"], copies=1, tv_weight=0.0, build_transforms=lambda c, s: _identity)
    report = transfer(vit, vit, recipe, classes=[0, 3, 7], steps=30)
    assert report.classes == [0, 3, 7] and report.total == 3
    assert report.hits == 3, report.predicted


def _identity(x, generators, copies, step, total_steps):
    return x


TRAINED = Path(vit_feature_viz.data.__file__).parent / "models" / "shapes-color-vit-a"


@pytest.fixture(scope="module")
def trained():
    return load_model(str(TRAINED), device="cpu", precision="fp32")


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_a_few_augmented_steps_raise_a_trained_features_activation(trained, recipe):
    """Each recipe's plumbing, augmentations on, on a model that learned something (a random tower is too noisy
    for this). Two features of the middle block, 12 steps: the mean gain is about +0.1 for every recipe (the
    paper's strong early noise can still lower one feature at first), a sign error or a broken view would lose."""
    results = render(trained, 3, [60, 262], recipe=recipe, steps=12, progress=False)
    gains = [r.activation - r.activation_init for r in results]
    assert np.mean(gains) > 0.05, gains
