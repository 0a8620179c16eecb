"""The built-in shapes CLIP (issue 20, item 6): loads offline by name with its own tokenizer, knows shapes and
colours zero-shot, names features offline, and a text prompt renders what it says (a small subset of
benchmarks/bench_prompts.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vit_feature_viz import load_model
from vit_feature_viz.data.shape_captions import SHAPE_COLORS, colour_prompt, dominant_colour, shape_prompt
from vit_feature_viz.data.shapes import CLASS_COLORS, SHAPE_CLASSES, generate_shapes
from vit_feature_viz.models.builtin import BUILTIN_MODELS, SHAPES_CLIP
from vit_feature_viz.models.text import ClipText
from vit_feature_viz.quality import zero_shot

IMAGES = 120  # held-out images per zero-shot check (20 per class)


@pytest.fixture(scope="module")
def clip():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(SHAPES_CLIP, device="cpu")
    torch.set_num_threads(threads)


def test_it_loads_offline_by_name_with_its_own_tokenizer(clip):
    assert BUILTIN_MODELS[SHAPES_CLIP].is_dir() and clip.model_id == SHAPES_CLIP
    info = clip.describe()
    assert info["is_clip"] and info["text_tower"] and info["image_size"] == 64 and info["patch_size"] == 8
    size = sum(f.stat().st_size for f in BUILTIN_MODELS[SHAPES_CLIP].iterdir())
    assert size < 5e6
    from transformers import AutoTokenizer

    text = ClipText(clip)
    tokenizer = AutoTokenizer.from_pretrained(str(BUILTIN_MODELS[SHAPES_CLIP]))  # the files ClipText reads
    for word in [*SHAPE_CLASSES, *SHAPE_COLORS, "photo", "background"]:
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word
    context = clip.module.config.text_config.max_position_embeddings
    longest = "a photo of a magenta triangle on a white background"
    assert len(tokenizer(longest)["input_ids"]) <= context  # the vocabulary's phrases fit
    long = " ".join(["a red disc"] * 20)  # beyond the context: cut, as CLIP tokenizers cut
    cut = tokenizer.decode(tokenizer(long, truncation=True, max_length=context)["input_ids"][1:-1])
    assert torch.allclose(text.encode([long]), text.encode([cut]), atol=1e-6)


def test_zero_shot_shape_and_colour_well_above_chance(clip):
    shape_set = generate_shapes(IMAGES, variant="shape", seed=12_345)
    shapes = zero_shot(clip, shape_set.images, [shape_prompt(s) for s in SHAPE_CLASSES])
    assert np.mean(shapes == shape_set.labels) > 0.5  # chance: 1/6
    colour_set = generate_shapes(IMAGES, variant="color", seed=12_346)
    names = list(SHAPE_COLORS)
    class_colour = np.array([int(np.argmin([np.linalg.norm(np.array(SHAPE_COLORS[n]) - c) for n in names]))
                             for c in CLASS_COLORS])
    colours = zero_shot(clip, colour_set.images, [colour_prompt(c) for c in names])
    assert np.mean(colours == class_colour[colour_set.labels]) > 0.8


def test_dominant_colour_reads_painted_images():
    for name, rgb in SHAPE_COLORS.items():
        image = np.full((16, 16, 3), 0.5, np.float32)
        image[4:12, 4:12] = rgb
        assert dominant_colour(image) == name
    assert dominant_colour(np.full((8, 8, 3), 128, np.uint8)) is None  # grey: no saturated pixel


def test_names_features_offline(clip):
    from vit_feature_viz.analysis.clip_names import clip_names

    words = [*SHAPE_CLASSES, *SHAPE_COLORS]
    result = clip_names(clip, "vit-feature-viz/shapes-color", layer=5, features="0", vocabulary=words, prompt="{}",
                        max_images=16, top_images=4, top_names=3, progress=False)
    assert [row["feature"] for row in result.rows] == [0, 0, 0] and result.settings["images"] == 16
    assert all(row["name"] in words for row in result.rows)


def test_prompts_draw_the_shape_and_colour_they_name(clip):
    """A crossed subset of benchmarks/bench_prompts.py (2 colours x 2 shapes, 32 steps): each image is classified
    as its shape by the shape-only classifier (not the model the CLIP's tower started from) and shows its colour."""
    from vit_feature_viz.quality import prompt_report

    judge = load_model("vit-feature-viz/shapes-shape-vit-b", device="cpu")
    report = prompt_report(clip, judge, "fast", steps=32, colours=["yellow", "blue"], shapes=["ring", "cross"])
    assert report.prompts == ["a yellow ring", "a blue ring", "a yellow cross", "a blue cross"]
    assert report.shape_hits == 4 and report.colour_hits == 4, (report.predicted_shapes, report.found_colours)
