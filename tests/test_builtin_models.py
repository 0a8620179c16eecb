"""The trained shapes fixtures and the built-in names: they load with no network, by built-in name, by path and by
repo id through the real Hub cache, and they have really learned their variant. The default-model decision falls
back to the built-in when the Hub cannot be reached, and only then."""

import json
import os
import sys

import pytest
import torch

from helpers import free_port, run_cli
from vit_feature_viz import load_model
from vit_feature_viz.data import SHAPE_CLASSES, generate_shapes
from vit_feature_viz.errors import VizError
from vit_feature_viz.models import builtin
from vit_feature_viz.models.base import LOGITS, Target
from vit_feature_viz.models.hub_files import CheckpointFiles

FRESH_SEED = 424_242  # neither a training batch seed nor the validation seed of scripts/train_shape_fixtures.py
# Chance is 1/6. Measured on held-out images: colour fixtures ~0.99; shape-only fixtures ~0.75 (their CPU budget
# ran out before they converged, see training.json): far above chance, so they read outlines.
MIN_ACCURACY = {"color": 0.9, "shape": 0.6}


def shape_accuracy(model, variant: str, count: int = 200) -> float:
    shapes = generate_shapes(count, variant=variant, size=model.image_size, seed=FRESH_SEED)
    images = torch.from_numpy(shapes.images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        logits = model.activations(images, [Target(LOGITS)])[Target(LOGITS)]
    return float((logits.argmax(-1).numpy() == shapes.labels).mean())


def test_builtin_default_loads_offline_from_the_package():
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # conftest: no network, and nothing of ours in the Hub cache
    model = load_model(builtin.DEFAULT_BUILTIN)
    assert model.model_id == "vit-feature-viz/shapes-vit"
    assert (model.backend, model.image_size, model.patch_size, model.num_layers) == ("transformers", 64, 8, 6)
    assert model.num_classes == len(SHAPE_CLASSES)
    assert [model.module.config.id2label[i] for i in range(6)] == list(SHAPE_CLASSES)
    assert builtin.BUILTIN_MODELS[builtin.DEFAULT_BUILTIN] == builtin.MODELS_DIR / builtin.DEFAULT_FIXTURE


def test_every_short_name_is_built_in_and_the_pairs_differ_in_width(trained_paths):
    widths = {}
    for short, folder in trained_paths.items():
        assert builtin.BUILTIN_MODELS[f"vit-feature-viz/{short}"] == folder
        model = load_model(f"vit-feature-viz/{short}")
        assert model.model_id == f"vit-feature-viz/{short}" and model.num_layers == 6
        widths[short] = model.hidden_size
        assert (folder / "model.safetensors").stat().st_size <= 10_000_000
        assert json.loads((folder / "preprocessor_config.json").read_text())["image_mean"] == [0.5] * 3
    for variant in ("color", "shape"):
        assert widths[f"shapes-{variant}-vit-a"] != widths[f"shapes-{variant}-vit-b"]


def test_a_builtin_name_has_no_revisions():
    with pytest.raises(VizError, match="built into vit-feature-viz"):
        load_model(builtin.DEFAULT_BUILTIN, revision="v1")


def test_trained_fixtures_load_by_name_through_the_hub_cache(trained_repos, hub_cache_dir):
    repo = trained_repos["shapes-shape-vit-b"]
    config_file = CheckpointFiles(repo).path("config.json")
    assert config_file.startswith(str(hub_cache_dir))  # served by huggingface_hub from the cache, offline
    model = load_model(repo)
    assert model.model_id == repo and model.num_classes == 6


@pytest.mark.parametrize("short", ["shapes-color-vit-a", "shapes-color-vit-b", "shapes-shape-vit-a", "shapes-shape-vit-b"])
def test_trained_fixture_classifies_fresh_images_of_its_variant(trained_repos, short):
    model = load_model(trained_repos[short])
    variant = short.split("-")[1]
    assert shape_accuracy(model, variant) >= MIN_ACCURACY[variant]


def test_the_shape_fixture_reads_shape_not_colour(trained_paths):
    """Shape-only training: random colours do not confuse it, so its features must encode the outline."""
    model = load_model(str(trained_paths["shapes-shape-vit-a"]))
    assert shape_accuracy(model, "color") >= MIN_ACCURACY["shape"]  # class colours it never saw as a cue change nothing


# ------------------------------------------------------------------------------ default model decision


def test_default_is_the_builtin_with_a_notice_when_offline():
    name, notice = builtin.default_model_id()
    assert name == builtin.DEFAULT_BUILTIN
    assert "cannot be reached" in notice and builtin.DEFAULT_BUILTIN in notice and "\n" not in notice


def test_default_is_the_builtin_when_the_endpoint_refuses(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    name, notice = builtin.default_model_id(endpoint=f"http://127.0.0.1:{free_port()}", )
    assert name == builtin.DEFAULT_BUILTIN and notice


def test_default_stays_the_hub_model_when_the_hub_answers(hub):
    assert builtin.hub_reachable()
    assert builtin.default_model_id() == (builtin.DEFAULT_HUB_MODEL, None)


def test_default_stays_a_hub_model_that_is_cached(tiny_repos):
    assert builtin.default_model_id(tiny_repos["vit"]) == (tiny_repos["vit"], None)  # offline, but in the cache


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "closed HF_ENDPOINT"])
def test_cli_without_a_model_uses_the_builtin_when_the_hub_is_unreachable(how):
    env = dict(os.environ)
    if how != "HF_HUB_OFFLINE":
        env.update(HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    result = run_cli("layers", "--json", env=env, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["model_id"] == builtin.DEFAULT_BUILTIN
    notice = [line for line in result.stderr.splitlines() if "cannot be reached" in line]
    assert len(notice) == 1 and builtin.DEFAULT_BUILTIN in notice[0]


def test_cli_offers_the_builtin_when_a_hub_model_cannot_be_fetched():
    result = run_cli("layers", "some-org/not-cached", check=False, timeout=300)
    assert result.returncode == 2
    assert builtin.DEFAULT_BUILTIN in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_app_offline_starts_on_the_builtin_and_renders_it():
    """`python app.py` on an offline machine: the model box holds the built-in, the notice is shown, and a render
    of it through the real server returns images."""
    import importlib.util
    from pathlib import Path

    import gradio as gr
    from gradio_client import Client

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    from spaces_config.presets import current_preset

    spec = importlib.util.spec_from_file_location("vfv_app_offline", root / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    demo = app.build_demo(current_preset({"VFV_HARDWARE": "cpu-basic", "VFV_MAX_STEPS": "8", "VFV_MAX_FEATURES": "2"}))
    boxes = {getattr(b, "elem_id", None): b for b in demo.blocks.values() if isinstance(b, (gr.Textbox, gr.Markdown))}
    assert boxes["model-id"].value == builtin.DEFAULT_BUILTIN
    assert "cannot be reached" in boxes["model-summary"].value
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert len(client.predict(builtin.DEFAULT_BUILTIN, api_name="/layers")["layers"]) == 6
        images, _table = client.predict(builtin.DEFAULT_BUILTIN, 5, "0,1", "feature", "paper", 8, 0, 0,
                                         api_name="/render")
        assert len(images) == 2
    finally:
        demo.close()
