"""Objectives beyond one channel (issue 20): directions, negatives and diverse sets, on the built-in trained model
(exact equalities, constructed vectors) and through the CLI and a gallery folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from vit_feature_viz import VizError, render
from vit_feature_viz.core.directions import read_vectors
from vit_feature_viz.core.diversity import gram_similarity
from vit_feature_viz.core.objectives import Feature, Negative, Residual
from vit_feature_viz.core.requested import requested_objective
from vit_feature_viz.models.base import MLP, RESIDUAL, Target
from vit_feature_viz.store.pages import open_gallery

LAYER, STEPS = 3, 3



@pytest.fixture(scope="module")
def acts(shapes):
    from vit_feature_viz.data.shapes import generate_shapes

    pixels = torch.from_numpy(generate_shapes(4, variant="shape", size=shapes.image_size, seed=3).images)
    pixels = pixels.permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        return shapes.activations(pixels, {Target(MLP, LAYER), Target(RESIDUAL, LAYER)})


def _images(results):
    return [torch.from_numpy(np.asarray(r.image).copy()) for r in results]


def test_a_channels_unit_vector_renders_that_channels_image_exactly(shapes, tmp_path):
    """The issue's measure: a direction equal to a channel's unit vector gives the same image, same seed (fc1 from
    a .npy, the residual stream from a .safetensors key)."""
    mlp, width = shapes.blocks[LAYER].features, shapes.hidden_size
    np.save(tmp_path / "fc1.npy", np.eye(mlp, dtype=np.float32))
    save_file({"other": np.ones(3, np.float32), "rows": np.eye(width, dtype=np.float32)}, str(tmp_path / "res.safetensors"))
    for base, source in (("feature", f"{tmp_path}/fc1.npy"), ("residual", f"{tmp_path}/res.safetensors:rows")):
        plain = render(shapes, LAYER, [5, 9], objective=base, steps=STEPS, seed=1, progress=False)
        along = render(shapes, LAYER, [5, 9], objective=requested_objective(base, LAYER, direction=source), steps=STEPS,
                       seed=1, progress=False)
        for a, b in zip(_images(plain), _images(along)):
            assert torch.equal(a, b)
        assert [r.activation for r in plain] == [r.activation for r in along]
        assert along[0].objective.startswith(f"{base}-direction(") and "sha256:" in along[0].objective


def test_direction_sources_project_what_they_name(shapes, acts, tmp_path):
    x = Feature(LAYER).values(acts)  # [B, C] mean fc1 over patches
    v = np.random.default_rng(0).normal(size=x.shape[1]).astype(np.float32)
    np.save(tmp_path / "v.npy", v)
    unit = torch.from_numpy(v / np.linalg.norm(v))
    projection = requested_objective("feature", LAYER, direction=f"{tmp_path}/v.npy")
    projection.check(shapes)
    torch.testing.assert_close(projection.values(acts)[:, 0], x @ unit)
    cosine = requested_objective("feature", LAYER, direction=f"{tmp_path}/v.npy", cosine=True)
    cosine.check(shapes)
    torch.testing.assert_close(cosine.values(acts)[:, 0], torch.nn.functional.cosine_similarity(x, unit[None], dim=1))
    difference = requested_objective("feature", LAYER, direction="difference:12,40")
    difference.check(shapes)
    torch.testing.assert_close(difference.values(acts)[:, 0], (x[:, 12] - x[:, 40]) / 2**0.5)
    assert difference.name == "feature-direction(difference:12,40)"
    # a linear probe's rows, read through its standardization (analysis/probe.py's saved file)
    from vit_feature_viz.analysis.probe import LinearProbe, save_probe

    width = shapes.hidden_size
    weight, scale = torch.randn(3, width), torch.rand(width) + 0.5
    save_probe(LinearProbe(weight, torch.zeros(3), torch.zeros(width), scale, ["a", "b", "c"], 10, 100.0),
               tmp_path / "probe.safetensors")
    probe = requested_objective("residual", LAYER, direction=f"probe:{tmp_path}/probe.safetensors")
    probe.check(shapes)
    rows = weight / scale
    torch.testing.assert_close(probe.values(acts), Residual(LAYER).values(acts) @ (rows / rows.norm(dim=1, keepdim=True)).T)
    # the hash is of the values, whichever file holds them
    save_file({"v": v}, str(tmp_path / "v.safetensors"))
    assert read_vectors(f"{tmp_path}/v.safetensors").sha256 == read_vectors(f"{tmp_path}/v.npy").sha256


def test_bad_directions_are_one_line_errors(shapes, tmp_path):
    np.save(tmp_path / "short.npy", np.ones(7, np.float32))
    np.save(tmp_path / "zero.npy", np.zeros(384, np.float32))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    save_file({"a": np.ones(3, np.float32), "b": np.ones(3, np.float32)}, str(tmp_path / "two.safetensors"))
    cases = {
        f"{tmp_path}/missing.npy": "No vector file at",
        f"{tmp_path}/zero.npy": "has a zero, NaN or infinite row",
        f"{tmp_path}/objects.npy": "is not a readable .npy file",
        f"{tmp_path}/two.safetensors": "has several tensors (it holds a, b)",
        f"{tmp_path}/two.safetensors:c": "has no tensor 'c'",
        "difference:3,3": "needs two different channels",
        "difference:x,3": "is not a difference of two channels",
        "readme.txt": "is not a vector file",
    }
    for source, message in cases.items():
        with pytest.raises(VizError, match=message.replace("(", r"\(").replace(")", r"\)")):
            requested_objective("feature", LAYER, direction=source).check(shapes)
    with pytest.raises(VizError, match="has 7 numbers but feature of block 3 has 384 channels"):
        render(shapes, LAYER, 0, objective=requested_objective("feature", LAYER, direction=f"{tmp_path}/short.npy"),
               steps=1, progress=False)
    with pytest.raises(VizError, match="Cosine needs a direction"):
        requested_objective("feature", LAYER, cosine=True)
    with pytest.raises(VizError, match="A direction reads the activations"):
        requested_objective("logit", LAYER, direction="difference:0,1")


def test_negative_drives_the_feature_down(shapes, acts):
    negative = requested_objective("feature", LAYER, negative=True)
    assert isinstance(negative, Negative) and negative.name == "feature-negative"
    assert requested_objective("feature-negative", LAYER).name == "feature-negative"
    torch.testing.assert_close(negative.values(acts), -Feature(LAYER).values(acts))
    down = render(shapes, LAYER, [5], objective="feature-negative", steps=STEPS, progress=False)[0]
    assert down.objective == "feature-negative"
    assert down.activation > down.activation_init + 0.005  # minus the feature rose: the feature itself fell


def test_gram_similarity_on_constructed_tokens():
    same = torch.rand(1, 5, 4).repeat(3, 1, 1)  # 3 facets, 1 copy, identical
    assert gram_similarity(same, 1, 3, 1).item() == pytest.approx(1.0)
    apart = torch.zeros(2, 5, 4)
    apart[0, :, 0], apart[1, :, 1] = 1.0, 1.0  # two facets firing disjoint channels
    assert gram_similarity(apart, 1, 2, 1).item() == pytest.approx(0.0)


def test_diverse_sets_differ_more_than_plain_seeds(shapes):
    """Same starting images (facet seeds), with and without the repulsion: the repelled set is further apart in
    the judged layer (its Gram matrices), facet 1 starts from the plain image's seed."""
    from vit_feature_viz.quality import feature_values, mean_pairwise_distance, saved_pixels

    sets = {w: render(shapes, LAYER, [9], steps=6, diversity=2, diversity_weight=w, progress=False)
            for w in (0.0, 3.0)}
    assert [r.objective for r in sets[3.0]] == ["feature-facet1of2", "feature-facet2of2"]
    plain = render(shapes, LAYER, [9], steps=0, progress=False)[0]
    assert sets[0.0][0].activation_init == pytest.approx(plain.activation_init, abs=1e-6)
    distance = {w: mean_pairwise_distance(feature_values(shapes, LAYER, saved_pixels(shapes, [r.image for r in rs])))
                for w, rs in sets.items()}
    assert distance[3.0] > 1.5 * distance[0.0]
    with pytest.raises(VizError, match="Diversity must be at least 1"):
        render(shapes, LAYER, [9], diversity=0, progress=False)


def test_cli_saves_directions_negatives_and_sets_that_explore_shows_and_resumes(shapes, tmp_path, capsys):
    from vit_feature_viz.cli import main

    vector = np.zeros(shapes.blocks[LAYER].features, np.float32)
    vector[9] = 1.0
    np.save(tmp_path / "v.npy", vector)
    out = tmp_path / "gallery"

    def run(features, *options):
        argv = ["render", "vit-feature-viz/shapes-vit", "--layer", str(LAYER), "--features", features, "--steps", "2",
                "--device", "cpu", "--quiet", "--out", str(out), *map(str, options)]
        assert main(argv) == 0
        return capsys.readouterr().err

    run("0", "--direction", tmp_path / "v.npy", "--png", tmp_path / "png")
    run("9", "--negative", "--diversity", "2")
    assert "rendered 0 feature(s)" in run("9", "--negative", "--diversity", "2")  # both facets saved: no redo
    gallery = open_gallery(str(out))
    sha = read_vectors(str(tmp_path / "v.npy")).sha256[:16]
    direction = f"feature-direction(v.npy sha256:{sha})"
    assert sorted(gallery.objectives(None, LAYER)) == sorted(
        [direction, "feature-negative-facet1of2", "feature-negative-facet2of2"])
    assert len(list((tmp_path / "png").glob("layer3-feature-direction*-feature0.png"))) == 1
    page = gallery.feature_page(None, LAYER, 9, "feature-negative-facet1of2")
    assert [v.row.objective for v in page.visualizations] == ["feature-negative-facet1of2", "feature-negative-facet2of2"]
    assert direction in gallery.feature_page(None, LAYER, 0, direction).visualizations[0].caption
