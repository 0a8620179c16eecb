"""The model surface on real tiny checkpoints of every backend, loaded by Hub name from the offline test cache."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_checkpoints import DINOV2_CONFIG_SIZE, IMG

from vit_feature_viz import VizError, load_model
from vit_feature_viz.cli import main
from vit_feature_viz.core.render import render
from vit_feature_viz.models import LOGITS, MLP, RESIDUAL, Target

# Where each library really puts the post-GELU MLP hidden of block 2 of the vision tower (the test may know
# module names; the library must not).
ACTIVATION_MODULE = {
    "vit": "vit.layers.2.mlp.activation_fn",
    "clip": "vision_model.encoder.layers.2.mlp.activation_fn",
    "timm_vit": "blocks.2.mlp.act",
    "open_clip": "visual.transformer.resblocks.2.mlp.gelu",
}


@pytest.fixture(scope="module")
def models(tiny_repos):
    return {role: load_model(tiny_repos[role], device="cpu") for role in ACTIVATION_MODULE}


@pytest.mark.parametrize("role", list(ACTIVATION_MODULE))
def test_mlp_hook_sits_on_the_vision_towers_block(models, role):
    model = models[role]
    assert model.num_layers == 4 and all(b.features == 128 for b in model.blocks)
    seen = {}
    module = dict(model.module.named_modules())[ACTIVATION_MODULE[role]]
    handle = module.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
    images = torch.rand(2, 3, 32, 32)
    try:
        acts = model.activations(images, [Target(MLP, 2)])
    finally:
        handle.remove()
    expected = seen["out"]
    if expected.shape[0] != 2:  # sequence-first towers
        expected = expected.transpose(0, 1)
    torch.testing.assert_close(acts[Target(MLP, 2)], expected)
    assert acts.grid == (4, 4) and acts.patches(Target(MLP, 2)).shape == (2, 16, 128)


def test_full_clip_model_visualizes_the_vision_tower_not_the_text_tower(models):
    clip = models["clip"]
    assert all(b.name.startswith("vision_model.") for b in clip.blocks)
    assert hasattr(clip.module, "text_model")  # kept for later objectives


@pytest.mark.parametrize("role", list(ACTIVATION_MODULE))
def test_nothing_after_the_target_block_is_computed(models, role):
    model = models[role]
    modules = dict(model.module.named_modules())
    calls = []
    handles = [modules[b.name].register_forward_pre_hook(lambda m, a, i=b.index: calls.append(i)) for b in model.blocks]
    try:
        model.activations(torch.rand(1, 3, 32, 32), [Target(MLP, 1)])
    finally:
        for h in handles:
            h.remove()
    assert calls == [0, 1]


def test_residual_is_the_block_output_and_logits_come_from_the_head(tiny_repos):
    model = load_model(tiny_repos["vit"], device="cpu")
    images = torch.rand(2, 3, 32, 32)
    acts = model.activations(images, [Target(RESIDUAL, 1), Target(LOGITS)])
    with torch.no_grad():
        out = model.module(pixel_values=model.normalize(images), output_hidden_states=True)
    torch.testing.assert_close(acts[Target(RESIDUAL, 1)], out.hidden_states[2])
    torch.testing.assert_close(acts[Target(LOGITS)], out.logits)
    assert model.num_classes == 10


@pytest.mark.parametrize(
    "role,prefix", [("vit_model", 1), ("deit", 2), ("siglip", 0), ("dinov2", 1), ("clip_vision", 1)]
)
def test_other_transformers_towers_load_with_their_prefix_tokens(tiny_repos, role, prefix):
    model = load_model(tiny_repos[role], device="cpu")
    acts = model.activations(torch.rand(1, 3, 32, 32), [Target(MLP, 0)])
    assert acts.num_prefix == prefix and acts.patches(Target(MLP, 0)).shape == (1, 16, model.blocks[0].features)


def test_smaller_images_interpolate_position_embeddings(models):
    for role in ("vit", "clip", "timm_vit"):
        acts = models[role].activations(torch.rand(1, 3, 16, 16), [Target(MLP, 0)])
        assert acts.grid == (2, 2)
    assert models["vit"].check_image_size(16) == 16
    with pytest.raises(VizError, match="cannot change its input size: use --image-size 32"):
        models["open_clip"].check_image_size(16)


def test_model_knows_its_preprocessing(models):
    assert models["vit"].mean == (0.5, 0.5, 0.5)
    assert models["clip"].mean[0] == pytest.approx(0.48145466) and models["clip"].is_clip
    assert models["timm_vit"].backend == "timm" and models["open_clip"].backend == "open_clip"


def _library_pipeline(role, repo):
    """Each library's own eval preprocessing of the checkpoint, normalization included: what the model expects."""
    if role in ("vit", "clip"):
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(repo)
        return lambda image: processor(images=image, return_tensors="pt")["pixel_values"][0]
    if role == "timm_vit":
        import timm
        import timm.data

        module = timm.create_model(f"hf-hub:{repo}", pretrained=False)
        return timm.data.create_transform(**timm.data.resolve_model_data_config(module), is_training=False)
    import open_clip

    return open_clip.create_model_and_transforms(f"hf-hub:{repo}")[2]


@pytest.mark.parametrize("role", list(ACTIVATION_MODULE))
def test_preprocess_is_the_checkpoints_own_pipeline(models, tiny_repos, role):
    """Resize, crop and interpolation come from each library (preprocessor_config.json, timm's data config,
    open_clip's preprocess); our pixels, normalized by the model, equal the library's output."""
    from PIL import Image

    from vit_feature_viz.images import preprocess as generic

    model = models[role]
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 256, (37, 61, 3), dtype=np.uint8))  # not square, not model-sized
    pixels = model.preprocess(photo)
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32 and 0 <= pixels.min() <= pixels.max() <= 1
    expected = _library_pipeline(role, tiny_repos[role])(photo)
    assert torch.allclose(model.normalize(pixels[None])[0], expected, atol=1e-5)
    stored = model.preprocess_uint8(photo)
    assert stored.dtype == torch.uint8 and torch.allclose(stored.float() / 255, pixels, atol=0.5 / 255 + 1e-6)
    if role in ("clip", "timm_vit", "vit"):  # these differ from one generic resize + crop, so the test can fail
        assert not torch.allclose(model.normalize(generic([photo], 32))[0], expected, atol=1e-3)


def test_checkpoint_without_a_processor_falls_back_to_resize_and_centre_crop(tiny_repos):
    from PIL import Image

    from vit_feature_viz.images import preprocess as generic

    model = load_model(tiny_repos["vit_model"], device="cpu")  # a ViTModel saved without preprocessor_config.json
    photo = Image.fromarray(np.random.default_rng(4).integers(0, 256, (50, 40, 3), dtype=np.uint8))
    assert model.pixel_pipeline is None and torch.equal(model.preprocess(photo), generic([photo], 32)[0])


@pytest.mark.parametrize(
    "name,message",
    [
        ("tiny-org/does-not-exist", "not in the local cache and HF_HUB_OFFLINE is set"),
        ("tiny-org/resnet", "has no transformer blocks with an MLP"),
        ("tiny-org/vit-pickle", "only has pickle weights"),
        ("timm/vit_tiny_pickle.random", "pass --allow-pickle"),
        ("", "No model given"),
    ],
)
def test_bad_models_give_one_line_errors(name, message):
    with pytest.raises(VizError, match=message) as err:
        load_model(name, device="cpu")
    assert "\n" not in str(err.value)


def test_pickle_weights_load_when_allowed(tiny_repos):
    model = load_model(tiny_repos["vit_pickle"], device="cpu", allow_pickle=True)
    assert model.num_layers == 4


def test_layer_out_of_range(models):
    with pytest.raises(VizError, match="Layer 4 is out of range: .* use 0-3"):
        models["vit"].check_layer(4)


def test_cli_layers_json(tiny_repos, capsys):
    """main() in this process: what is under test is the JSON (test_bad_input.py runs `layers` as a real process)."""
    assert main(["layers", tiny_repos["clip"], "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == "transformers" and info["image_size"] == 32
    assert [(layer["index"], layer["features"]) for layer in info["layers"]] == [(i, 128) for i in range(4)]
    assert info["layers"][0]["name"] == "vision_model.encoder.layers.0"


def test_renders_at_the_size_the_processor_feeds_the_model(tiny_repos):
    """DINOv2 configs declare 518 px while their processor crops 224: the default size is the processor's, and the
    config's size (the position embeddings') stays available. Where the two agree nothing changes."""
    dinov2 = load_model(tiny_repos["dinov2"], device="cpu")
    assert (dinov2.image_size, dinov2.native_size) == (IMG, DINOV2_CONFIG_SIZE)
    assert dinov2.describe()["image_size"] == IMG
    assert dinov2.check_image_size(None) == IMG and dinov2.check_image_size(DINOV2_CONFIG_SIZE) == DINOV2_CONFIG_SIZE
    assert tuple(dinov2.preprocess(Image.new("RGB", (50, 40))).shape) == (3, IMG, IMG)
    (result,) = render(dinov2, 1, [0], steps=2, progress=False)
    assert result.image.size == (IMG, IMG)
    for role in ("clip", "siglip", "vit", "timm_vit", "open_clip"):
        model = load_model(tiny_repos[role], device="cpu")
        assert model.image_size == model.native_size == IMG, role


def test_loading_draws_no_progress_bar(tiny_repos, capfd):
    """transformers draws a "Loading weights" bar on every load; a CLI run with --quiet must stay quiet."""
    capfd.readouterr()
    load_model(tiny_repos["vit_model"], device="cpu")
    assert "Loading weights" not in capfd.readouterr().err
