"""Blocks run by hand (models/stages.py) reproduce each backend's own forward pass."""

import pytest
import torch
import torch.nn.functional as F

from vit_feature_viz.errors import VizError
from vit_feature_viz.models import LOGITS, Target, load_model
from vit_feature_viz.models.stages import clip_projection, token_stages


def _images(model, count=3, seed=0):
    return torch.rand(count, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("role", ["vit", "deit", "timm_vit"])
def test_hand_run_logits_match_the_model(tiny_repos, role):
    model = load_model(tiny_repos[role], device="cpu", precision="fp32")
    stages = token_stages(model)
    images = _images(model)
    with torch.no_grad():
        natural = model.activations(images, [Target(LOGITS)])[Target(LOGITS)]
        by_hand = stages.logits(stages.run(stages.embed(model.normalize(images))))
    assert stages.num_prefix == (2 if role == "deit" else 1)
    torch.testing.assert_close(by_hand, natural, atol=1e-5, rtol=1e-4)


def test_clip_hand_run_matches_image_features(tiny_repos):
    model = load_model(tiny_repos["clip"], device="cpu", precision="fp32")
    stages, project = token_stages(model), clip_projection(model)
    images = _images(model)
    with torch.no_grad():
        natural = model.module.get_image_features(pixel_values=model.normalize(images)).pooler_output
        by_hand = project(stages.norm(stages.run(stages.embed(model.normalize(images))))[:, 0])
    torch.testing.assert_close(by_hand, F.normalize(natural, dim=-1), atol=1e-5, rtol=1e-4)


def test_open_clip_hand_run_matches_encode_image(tiny_repos):
    model = load_model(tiny_repos["open_clip"], device="cpu", precision="fp32")
    stages, project = token_stages(model), clip_projection(model)
    images = _images(model)
    with torch.no_grad():
        natural = model.module.encode_image(model.normalize(images), normalize=True)
        by_hand = project(stages.norm(stages.run(stages.embed(model.normalize(images))))[:, 0])
    torch.testing.assert_close(by_hand, natural, atol=1e-5, rtol=1e-4)


def test_models_without_cls_or_head_are_refused_in_one_line(tiny_repos):
    with pytest.raises(VizError, match="no classification head"):
        clip = token_stages(load_model(tiny_repos["clip"], device="cpu", precision="fp32"))
        clip.logits(torch.zeros(1, 17, 32))
    with pytest.raises(VizError, match="cannot be run block by block|no CLS token"):
        token_stages(load_model(tiny_repos["siglip"], device="cpu", precision="fp32"))
