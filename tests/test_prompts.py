"""CLIP text prompts (issue 20, item 2): the prompt objective on tiny CLIPs of each backend (its head gives the
checkpoint's own image embedding; its gradient raises the cosine), composition, the CLI flag, the app endpoint, and
the refusals (timm, no text tower, empty prompt)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vit_feature_viz import VizError, load_model, render
from vit_feature_viz.core.objectives import Feature, make_objective
from vit_feature_viz.core.prompts import Prompt, PromptCls
from vit_feature_viz.core.requested import requested_objective
from vit_feature_viz.models.text import ClipText, clip_image_embeddings

BACKENDS = ("clip_short", "open_clip_short")  # tiny CLIPs that ship a tokenizer (transformers, open_clip)


@pytest.fixture(scope="module")
def clips(short_context_clips):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {role: load_model(short_context_clips[role], device="cpu") for role in BACKENDS}
    torch.set_num_threads(threads)


def _images(model, count=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, model.image_size, model.image_size, generator=generator)


@pytest.mark.parametrize("role", BACKENDS)
def test_prompt_reads_the_checkpoints_own_image_embedding(clips, role):
    """`prompt` maps the last block through the final norm and projection: the model's own embedding; its value
    is the cosine with the text tower's embedding, minus the negative prompt's."""
    model = clips[role]
    objective = Prompt(None, ["red dog", "blue car"], negative_prompt="green tree")
    objective.check(model)
    assert objective.layer == model.num_layers - 1 and objective.name == 'prompt("red dog" | "blue car" - "green tree")'
    images = _images(model)
    with torch.no_grad():
        acts = model.activations(images, objective.needs)
        embedding = objective.embedding(acts)
        values = objective.values(acts)
    own = clip_image_embeddings(model, images)
    assert torch.allclose(embedding, own, atol=1e-5)
    text = ClipText(model).encode(["red dog", "blue car", "green tree"])
    assert torch.allclose(values, own @ text[:2].T - own @ text[2:].T, atol=1e-5)


@pytest.mark.parametrize("role", BACKENDS)
@pytest.mark.parametrize("site", ["prompt", "prompt-cls"])
def test_rendering_raises_the_prompts_cosine(clips, role, site):
    """The objective's gradient reaches the image: a few steps raise the cosine at both sites, and the result is
    the cosine measured independently from the saved image."""
    model = clips[role]
    objective = requested_objective(site, 0, prompt=["red dog", "green tree"])
    results = render(model, 0, "all", objective=objective, recipe="fast", steps=6, seed=2, progress=False)
    assert [r.feature for r in results] == [0, 1]
    for result in results:
        assert result.activation > result.activation_init + 1e-3
        assert result.objective == objective.name
    if site == "prompt":
        pixels = torch.stack([torch.from_numpy(np.asarray(r.image).copy()) for r in results])
        own = clip_image_embeddings(model, pixels.permute(0, 3, 1, 2).float() / 255)
        text = ClipText(model).encode(["red dog", "green tree"])
        measured = (own * text).sum(1)
        assert torch.allclose(measured, torch.tensor([r.activation for r in results]), atol=0.02)


def test_prompts_compose_with_plus_minus_times(clips):
    model = clips["clip_short"]
    red, blue = Prompt(None, "red"), Prompt(None, "blue")
    combined = red - 0.5 * blue + 0.25 * Feature(1, channel=3)
    combined.check(model)
    images = _images(model, 2, seed=1)
    with torch.no_grad():
        acts = model.activations(images, combined.needs)
        expected = red.values(acts)[:, 0] - 0.5 * blue.values(acts)[:, 0] + 0.25 * acts.patches(
            Feature(1).target).float().mean(1)[:, 3]
        got = combined(acts, torch.zeros(2, dtype=torch.long))
    assert torch.allclose(got, expected, atol=1e-6)
    assert combined.num_channels(model) == 1  # the prompt terms have one prompt each


def test_negative_prompt_objective_is_the_negated_cosine(clips):
    model = clips["open_clip_short"]
    plain, negated = requested_objective("prompt", None, prompt="cat"), requested_objective("prompt", None, prompt="cat",
                                                                                            negative=True)
    negated.check(model)
    plain.check(model)
    assert negated.name == 'prompt("cat")-negative'
    with torch.no_grad():
        acts = model.activations(_images(model), negated.needs)
    assert torch.equal(negated.values(acts), -plain.values(acts))


def test_prompt_refusals_name_the_fix(clips, tiny_repos):
    timm = load_model(tiny_repos["timm_vit"], device="cpu")
    with pytest.raises(VizError, match="timm checkpoints hold only CLIP's image tower: load the same CLIP through open_clip"):
        Prompt(None, "a red disc").check(timm)
    vit = load_model(tiny_repos["vit"], device="cpu")
    with pytest.raises(VizError, match="has no text tower.*full CLIP checkpoint"):
        Prompt(None, "a red disc").check(vit)
    for empty in ("", "   ", [], None, ["a cat", " "]):
        with pytest.raises(VizError, match="The prompt is empty"):
            requested_objective("prompt", None, prompt=empty)
    with pytest.raises(VizError, match="The prompt is empty"):  # the objective by name alone, as a registry gives it
        make_objective("prompt", 1).check(clips["clip_short"])
    with pytest.raises(VizError, match="objective prompt or prompt-cls, not neuron"):
        requested_objective("neuron", 1, prompt="cat")
    with pytest.raises(VizError, match="own direction"):
        requested_objective("prompt", 1, prompt="cat", direction="difference:1,2")
    with pytest.raises(VizError, match="prompt-cls reads one block"):
        PromptCls(None, "cat")
    with pytest.raises(VizError, match="Layer 9 is out of range"):
        PromptCls(9, "cat").check(clips["clip_short"])


def test_cli_renders_a_prompt_that_the_gallery_row_and_explore_name(clips, short_context_clips, tmp_path, capsys):
    from vit_feature_viz.cli import main
    from vit_feature_viz.store.pages import open_gallery

    repo, out = short_context_clips["clip_short"], tmp_path / "gallery"
    assert main(["render", repo, "--prompt", "red dog", "--prompt", "green tree", "--negative-prompt", "cat",
                 "--steps", "2", "--out", str(out), "--quiet"]) == 0
    last = clips["clip_short"].num_layers - 1
    name = 'prompt("red dog" | "green tree" - "cat")'
    gallery = open_gallery(str(out))
    assert gallery.objectives(None, last) == [name]  # the image embedding is read at the last block: the row says so
    assert [e.feature for e in gallery.features(None, last, name)] == [0, 1]
    assert name in gallery.feature_page(None, last, 1, name).visualizations[0].caption
    assert main(["render", repo, "--prompt", "red dog", "--objective", "prompt-cls", "--layer", "0", "--steps", "1",
                 "--out", str(out), "--quiet"]) == 0
    assert open_gallery(str(out)).objectives(None, 0) == [
        'prompt-cls("red dog")']
    capsys.readouterr()
    for argv, message in ((["--prompt", "  "], "The prompt is empty: give --prompt a text"),
                          (["--objective", "prompt-cls"], "The prompt is empty"),
                          ([], "--layer is missing")):
        assert main(["render", repo, *argv, "--steps", "1", "--out", str(tmp_path / "other"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err

