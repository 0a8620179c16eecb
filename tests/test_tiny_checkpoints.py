"""The tiny checkpoints load offline, by repo name, with each library's normal loader."""

import json
import os

import pytest
import torch

GRID = 16  # 32 px / 8 px patches = 4x4
WIDTH = 32


@pytest.fixture
def pixels():
    return torch.randn(1, 3, 32, 32)


def _load_auto(repo_id, cls=None, **kwargs):
    """Load with transformers, failing if any weight had to be freshly initialised."""
    from transformers import AutoModel

    model, info = (cls or AutoModel).from_pretrained(repo_id, output_loading_info=True, **kwargs)
    return model.eval(), info


def test_environment_is_offline_and_shared(tiny_repos, hub_cache_dir):
    from huggingface_hub import constants, scan_cache_dir

    assert constants.HF_HUB_OFFLINE
    assert os.path.samefile(constants.HF_HUB_CACHE, hub_cache_dir)
    assert json.loads(os.environ["VFV_TEST_REPOS"]) == tiny_repos
    info = scan_cache_dir(hub_cache_dir)  # huggingface_hub's own view of the layout
    assert not info.warnings
    # other test modules add their own repos (trained fixtures, refused checkpoints) to the same cache
    assert set(tiny_repos.values()) <= {r.repo_id for r in info.repos}


@pytest.mark.parametrize("role, tokens", [
    ("vit_model", 1 + GRID), ("clip_vision", 1 + GRID), ("siglip", GRID), ("dinov2", 1 + GRID),
])
def test_transformers_backbones(tiny_repos, pixels, role, tokens):
    model, info = _load_auto(tiny_repos[role])
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        out = model(pixel_values=pixels)
    assert out.last_hidden_state.shape == (1, tokens, WIDTH)


def test_vit_classifier(tiny_repos, pixels):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model, info = _load_auto(tiny_repos["vit"], AutoModelForImageClassification)
    assert not info["missing_keys"]
    assert model.config.id2label[3] == "class_3"
    with torch.no_grad():
        assert model(pixel_values=pixels).logits.shape == (1, 10)
    processor = AutoImageProcessor.from_pretrained(tiny_repos["vit"])
    assert processor.size == {"height": 32, "width": 32} and list(processor.image_mean) == [0.5] * 3


def test_deit_has_distillation_token(tiny_repos, pixels):
    model, info = _load_auto(tiny_repos["deit"])
    # saved as DeiTForImageClassificationWithTeacher (like facebook/deit-*-distilled): no pooler, two heads
    assert info["missing_keys"] <= {"pooler.dense.weight", "pooler.dense.bias"}
    with torch.no_grad():
        assert model(pixel_values=pixels).last_hidden_state.shape == (1, 2 + GRID, WIDTH)


def test_clip(tiny_repos, pixels):
    from transformers import AutoImageProcessor, CLIPModel
    from transformers.image_utils import OPENAI_CLIP_MEAN

    model, info = _load_auto(tiny_repos["clip"], CLIPModel)
    assert not info["missing_keys"]
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels)
        text = model.get_text_features(input_ids=torch.tensor([[49406, 320, 49407]]))
    # transformers 5 returns model outputs here, with the projected embedding as pooler_output
    assert image.pooler_output.shape == (1, 16) and text.pooler_output.shape == (1, 16)
    processor = AutoImageProcessor.from_pretrained(tiny_repos["clip"])
    assert list(processor.image_mean) == list(OPENAI_CLIP_MEAN) and processor.crop_size["height"] == 32


def test_resnet_is_not_a_vit(tiny_repos, pixels):
    model, info = _load_auto(tiny_repos["resnet"])
    assert type(model).__name__ == "ResNetModel" and not info["missing_keys"]
    with torch.no_grad():
        assert model(pixel_values=pixels).last_hidden_state.shape == (1, 16, 4, 4)


def test_vit_pickle_has_no_safetensors(tiny_repos, pixels):
    with pytest.raises(OSError):
        _load_auto(tiny_repos["vit_pickle"], use_safetensors=True)
    model, info = _load_auto(tiny_repos["vit_pickle"], use_safetensors=False)
    assert not info["missing_keys"]
    with torch.no_grad():
        assert model(pixel_values=pixels).last_hidden_state.shape == (1, 1 + GRID, WIDTH)


@pytest.mark.parametrize("role, weights", [("timm_vit", "model.safetensors"), ("timm_pickle", "pytorch_model.bin")])
def test_timm(tiny_repos, hub_cache_dir, pixels, role, weights):
    import timm

    repo = tiny_repos[role]
    snapshot = next((hub_cache_dir / f"models--{repo.replace('/', '--')}" / "snapshots").iterdir())
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(["config.json", weights])
    model = timm.create_model(f"hf-hub:{repo}", pretrained=True).eval()  # strict state-dict load
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert tuple(model.pretrained_cfg["mean"]) == (0.5, 0.5, 0.5)
    with torch.no_grad():
        assert model(pixels).shape == (1, 10)
        assert model.forward_features(pixels).shape == (1, 1 + GRID, WIDTH)


def test_open_clip(tiny_repos, pixels):
    import open_clip

    name = f"hf-hub:{tiny_repos['open_clip']}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    tokenizer = open_clip.get_tokenizer(name)  # falls back to the bundled BPE: no download
    model.eval()
    assert model.visual.image_size == (32, 32)
    assert tuple(model.visual.image_mean) == open_clip.OPENAI_DATASET_MEAN
    with torch.no_grad():
        assert model.encode_image(pixels).shape == (1, 16)
        assert model.encode_text(tokenizer(["a cat"])).shape == (1, 16)


def test_missing_repos_fail_offline():
    import open_clip
    import timm
    from transformers import AutoModel

    with pytest.raises(OSError):
        AutoModel.from_pretrained("tiny-org/not-in-cache")
    with pytest.raises(OSError):
        timm.create_model("hf-hub:timm/not_in_cache.random", pretrained=True)
    with pytest.raises(RuntimeError):
        open_clip.create_model_and_transforms("hf-hub:tiny-org/not-in-cache")
