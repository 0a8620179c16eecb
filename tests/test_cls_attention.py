"""CLS attention maps (vit_feature_viz/models/attention.py, analysis/cls_attention.py): the probabilities read from
each backend's q and k equal the library's own attention, the box scores on constructed maps, a resumed run, and
a run on the trained built-in models."""

import csv
import importlib
import warnings

import pytest
import torch
from PIL import Image

from vit_feature_viz.analysis import cls_attention
from vit_feature_viz.analysis.cls_attention import attention_overlay, attention_scores, region_coverage
from vit_feature_viz.data.shapes import shapes_dataset
from vit_feature_viz.image_datasets import BUILTIN_SPLITS
from vit_feature_viz.errors import VizError
from vit_feature_viz.models import load_model
from vit_feature_viz.models.attention import read_cls_attention
from vit_feature_viz.store.progress import Resumed

RUN = dict(device="cpu", precision="fp32", progress=False)


@pytest.fixture(scope="module")
def tiny(tiny_repos):
    return {role: load_model(tiny_repos[role], device="cpu", precision="fp32")
            for role in ("vit", "deit", "dinov2", "clip", "timm_vit", "open_clip", "siglip")}


def _images(model, count=2):
    return torch.rand(count, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("role", ["vit", "deit", "dinov2", "clip"])
def test_transformers_attention_read_from_q_and_k_is_the_models_own(tiny, role):
    model, images = tiny[role], _images(tiny[role])
    for layer in (0, model.num_layers - 1):
        read = read_cls_attention(model, images, layer)
        own = model.tower(pixel_values=model.normalize(images), output_attentions=True).attentions[layer][:, :, 0]
        assert read.tokens.shape == own.shape and torch.allclose(read.tokens, own, atol=1e-6)
    assert read.num_prefix == (2 if role == "deit" else 1) and read.grid == (4, 4)
    assert torch.allclose(read.patches.sum(dim=(-1, -2)), torch.ones(2, read.heads))


def test_timm_and_open_clip_attention_read_from_q_and_k_is_the_models_own(tiny):
    timm_model, images = tiny["timm_vit"], _images(tiny["timm_vit"])
    caught = {}
    attn = timm_model.module.blocks[2].attn  # eager on CPU: the probabilities pass through attn_drop
    handle = attn.attn_drop.register_forward_hook(lambda _m, args, _out: caught.__setitem__("p", args[0]))
    try:
        timm_model.module(timm_model.normalize(images))
    finally:
        handle.remove()
    assert torch.allclose(read_cls_attention(timm_model, images, 2).tokens, caught["p"][:, :, 0], atol=1e-6)

    clip_model = tiny["open_clip"]
    block = clip_model.tower.transformer.resblocks[3]
    handle = block.attn.register_forward_pre_hook(lambda _m, args: caught.__setitem__("x", args[0]))
    try:
        read = read_cls_attention(clip_model, images)  # default: the last block
    finally:
        handle.remove()
    x = caught["x"]  # in the layout the block uses; the weights come [B, heads, T, T] either way
    _, weights = block.attn(x, x, x, need_weights=True, average_attn_weights=False)
    assert read.layer == 3 and torch.allclose(read.tokens, weights[:, :, 0], atol=1e-6)


def test_a_model_without_a_cls_token_or_a_block_out_of_range_is_one_line(tiny):
    with pytest.raises(VizError, match="has no CLS token"):
        read_cls_attention(tiny["siglip"], _images(tiny["siglip"]))
    with pytest.raises(VizError, match="Layer 9 is out of range"):
        read_cls_attention(tiny["vit"], _images(tiny["vit"]), 9)


def test_a_map_built_to_point_at_the_box_scores_1_and_a_uniform_map_scores_chance():
    mask = torch.zeros(1, 32, 32)
    mask[0, 8:24, 0:20] = 1  # patches (8 px) rows 1-2, columns 0-2 with column 2 half inside
    coverage = region_coverage(mask, 8)
    assert coverage[0].tolist() == [[0, 0, 0, 0], [1, 1, 0.5, 0], [1, 1, 0.5, 0], [0, 0, 0, 0]]
    inside = torch.zeros(1, 1, 4, 4)
    inside[0, 0, 1:3, 0:2] = 0.25  # all the mass on patches wholly in the box
    uniform = torch.full((1, 1, 4, 4), 1 / 16)
    outside = torch.zeros(1, 1, 4, 4)
    outside[0, 0, 0, 3] = 0.7  # peak away from the box, some mass in it
    outside[0, 0, 1, 1] = 0.3
    mass, hits = attention_scores(torch.cat([inside, uniform, outside], dim=1), coverage)
    assert mass[0].tolist() == pytest.approx([1.0, 5 / 16, 0.3])  # uniform: the box's share of the image
    assert hits[0, 0] == 1 and hits[0, 2] == 0  # the peak of the third is outside: a miss, though 0.3 is inside
    edge = torch.zeros(1, 1, 4, 4)
    edge[0, 0, 2, 2] = 1.0  # a peak on a patch the box half covers points at the box
    assert attention_scores(edge, coverage)[1].item() == 1 and attention_scores(edge, coverage)[0].item() == 0.5


def _boxed(count, seed=0):
    import datasets
    import numpy as np

    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(count)]
    return datasets.Dataset.from_dict({"image": images, "bbox": [[4, 8, 20, 30]] * count},
                                      features=datasets.Features({"image": datasets.Image(),
                                                                  "bbox": datasets.List(datasets.Value("int64"))}))


def test_a_stopped_run_resumes_to_the_uninterrupted_result(tiny, tmp_path, monkeypatch):
    module = importlib.import_module("vit_feature_viz.analysis.cls_attention")  # the package attribute is the function
    data = _boxed(12)
    whole = cls_attention(tiny["vit"], data, batch_size=4, **RUN)
    calls = []

    def stopped_in_batch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return read_cls_attention(*args, **kwargs)

    monkeypatch.setattr(module, "read_cls_attention", stopped_in_batch_3)
    with pytest.raises(KeyboardInterrupt):
        cls_attention(tiny["vit"], data, batch_size=4, checkpoint=tmp_path / "progress", **RUN)
    monkeypatch.undo()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Resumed)
        resumed = cls_attention(tiny["vit"], data, batch_size=4, checkpoint=tmp_path / "progress", **RUN)
    assert [str(w.message) for w in caught if w.category is Resumed] == [
        "Resumed a stopped run: the 8 image(s) it had scored are skipped."]
    assert resumed.rows == whole.rows and len(whole.rows) == 3  # 2 heads and their mean
    assert resumed.settings == whole.settings and whole.settings["images"] == 12


def test_the_trained_builtin_models_cls_attention_finds_the_shape(tmp_path):
    """The shape-only built-in on images of vit-feature-viz/shapes-shape's test split (fewer of them): its last
    block's CLS attention peaks on the shape far more often than a random patch would, and holds more of its mass
    there than a uniform map."""
    shapes = shapes_dataset(32, variant="shape", seed=BUILTIN_SPLITS["test"])
    result = cls_attention("vit-feature-viz/shapes-shape-vit-a", shapes, **RUN)
    files = result.save(tmp_path / "g")
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(files["table"]) as f:
        rows = list(csv.DictReader(f))
    assert [r["head"] for r in rows] == ["0", "1", "2", "3", "mean"] and {r["layer"] for r in rows} == {"5"}
    mean = {k: float(v) for k, v in rows[-1].items() if k in ("mass_in_box", "pointing_game", "chance_mass",
                                                               "chance_pointing")}
    assert mean["pointing_game"] > mean["chance_pointing"] + 0.4 and mean["mass_in_box"] > mean["chance_mass"] + 0.05
    assert "pointing game" in result.summary()


def test_an_uploaded_images_attention_is_drawn_mean_first_then_each_head(tiny):
    strip = attention_overlay(tiny["vit"], Image.new("RGB", (50, 40), (200, 30, 30)), 1)
    assert strip.size == (96 * 3, 96 + 14) and strip.mode == "RGB"
