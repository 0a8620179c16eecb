"""The Gradio app, served on a free loopback port and called through gradio_client like any API user would.

The served app and its helpers are in app_fixtures.py; pushing the session gallery is tested in test_app_sharing.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import gradio as gr
from gradio_client import Client, handle_file
import numpy as np
from PIL import Image

from app_fixtures import ROOT, app_error, load_app, no_progress, render, serve
from helpers import free_port, load_rows
from hub_fixtures import IGNORE_CLIENT_UPLOAD_WARNING, parquet_reads, push_parquet_shards
from test_model_safety import _declares_vit_large, _header_claims_a_huge_tensor, _push_model  # the same repos
from vit_feature_viz.app import common
from vit_feature_viz.app.common import ModelCache
from vit_feature_viz.app.explore_tab import Explorer
from vit_feature_viz.app.render_tab import Renderer
from vit_feature_viz.app.sharing_tab import Sharing
from vit_feature_viz.errors import VizError

pytestmark = [pytest.mark.slow, IGNORE_CLIENT_UPLOAD_WARNING]


# --- the API ------------------------------------------------------------------------------------------------


def test_named_endpoints_and_their_parameters(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    params = {name: [p["parameter_name"] for p in info["parameters"]] for name, info in endpoints.items()}
    assert params["/layers"] == ["model_id"]
    assert params["/render"] == ["model_id", "layer", "features", "objective", "recipe", "steps", "image_size", "seed",
                                 "direction_file", "direction", "cosine", "negative", "diversity", "prompt",
                                 "negative_prompt", "sae"]
    assert params["/patch_map"] == ["model_id", "layer", "feature", "image", "objective", "sae"]
    assert [r["component"] for r in endpoints["/render"]["returns"]] == ["Gallery", "Dataframe"]
    assert params["/push"] == ["repo_name", "private", "token"]
    types = {p["parameter_name"]: p["python_type"]["type"] for p in endpoints["/render"]["parameters"]}
    assert types["model_id"] == "str" and types["layer"] == "int" and types["steps"] == "int"  # any id; whole numbers
    assert endpoints["/examples"]["parameters"][2]["python_type"]["type"] == "int"  # the feature
    assert not {"/download", "/pickers", "/feature_picker"} & set(endpoints)  # UI-only helpers stay private


@pytest.mark.parametrize("role", ["vit", "clip", "timm_vit", "open_clip"])
def test_layers_lists_the_blocks(client, tiny_repos, role):
    info = client.predict(tiny_repos[role], api_name="/layers")
    assert info["model_id"] == tiny_repos[role]
    assert [block["index"] for block in info["layers"]] == [0, 1, 2, 3]
    assert all(block["features"] == 128 for block in info["layers"])
    assert info["image_size"] == 32 and info["patch_size"] == 8


def test_render_returns_one_image_per_feature_and_the_activations(client, vit):
    images, table = render(client, vit, 1, "0-2", steps=3)
    assert len(images) == 3
    for item, feature in zip(images, [0, 1, 2]):
        assert item["caption"].startswith(f"feature {feature} · activation ")
        with Image.open(item["image"]) as image:
            assert image.size == (32, 32)
    assert table["headers"] == ["feature", "activation", "activation_init"]
    assert [row[0] for row in table["data"]] == [0, 1, 2]
    assert all(isinstance(value, float) for row in table["data"] for value in row[1:])


def test_render_is_deterministic_and_samples_random_features(client, vit):
    first = render(client, vit, 2, "random 2", steps=2, seed=7)[1]["data"]
    again = render(client, vit, 2, "random 2", steps=2, seed=7)[1]["data"]
    assert first == again and len(first) == 2
    assert all(0 <= row[0] < 128 for row in first)


@pytest.fixture(scope="module")
def labelled_vit(tmp_path_factory) -> Path:
    """The tiny ViT classifier with real class names in its config's id2label (the cached one says class_<i>)."""
    import json

    import tiny_checkpoints as tiny

    out = tmp_path_factory.mktemp("labelled-vit")
    tiny.build_vit(out)
    config = json.loads((out / "config.json").read_text())
    names = ["tabby cat", "golden retriever"] + [f"thing {i}" for i in range(2, tiny.NUM_LABELS)]
    config["id2label"] = dict(enumerate(names))
    config["label2id"] = {name: i for i, name in enumerate(names)}
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_logit_renders_are_captioned_with_class_names(client, labelled_vit):
    images, table = render(client, str(labelled_vit), 1, "0-1", objective="logit", steps=2)
    assert [item["caption"].split(" · ")[0] for item in images] == ["class 0 (tabby cat)", "class 1 (golden retriever)"]
    assert [row[0] for row in table["data"]] == [0, 1]


def test_the_model_cache_loads_each_model_once(vit, tiny_repos, monkeypatch):
    from vit_feature_viz.models import loader

    loads = []
    real = loader.load_model
    monkeypatch.setattr(loader, "load_model", lambda name, **kw: loads.append(name) or real(name, **kw))
    cache = ModelCache(size=1)
    first = cache.get(f" {vit} ")
    assert cache.get(vit) is first and loads == [vit]  # the same object, read once
    threads = [threading.Thread(target=cache.get, args=(tiny_repos["clip"],)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == [vit, tiny_repos["clip"]]  # three requests at once wait for one load
    assert cache.get(vit) is not first and loads == [vit, tiny_repos["clip"], vit]  # size 1: the vit was dropped


def test_render_open_clip_with_another_recipe(client, tiny_repos):
    images, table = render(client, tiny_repos["open_clip"], 3, "5", recipe="fourier", steps=2)
    assert len(images) == 1 and table["data"][0][0] == 5


def test_patch_map_returns_the_overlay(client, vit, tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (200, 40, 40)).save(path)
    overlay = client.predict(vit, 1, 3, handle_file(str(path)), api_name="/patch_map")
    with Image.open(overlay) as image:
        assert image.size == (320, 320)  # the 32 px crop the model saw, drawn at the size of its box
        pixels = np.asarray(image.convert("RGB"))
    # the colour bar's max label, drawn at that size (white text, about 320 / 14 px high), not enlarged from 32 px
    # (where no label fits at all)
    corner = pixels[:80, 160:300]
    text_rows = np.flatnonzero((corner == 255).all(axis=-1).any(axis=1))
    assert len(text_rows) >= 12, text_rows


def test_accentuate_returns_the_image_the_accentuated_image_and_their_difference(client, vit, tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    gallery = client.predict(vit, 1, 3, handle_file(str(path)), 3, 1.0, api_name="/accentuate")
    captions = [item["caption"] for item in gallery]
    assert [c.split(" · ")[0] for c in captions] == ["your image", "accentuated", "difference",
                                                     "patch map of the accentuated image"]
    original, accentuated, difference = (np.asarray(Image.open(item["image"]).convert("RGB")) for item in gallery[:3])
    assert original.shape == accentuated.shape == difference.shape == (32, 32, 3)  # the 32 px the model saw
    assert not np.array_equal(original, accentuated)  # 3 steps changed it
    change = accentuated.astype(int) - original
    assert np.abs(difference.astype(int) - 128).max() >= 126  # the largest change spans the difference's range
    assert np.corrcoef(change.ravel(), difference.astype(float).ravel())[0, 1] > 0.9  # and it shows the change
    assert "max steps" in app_error(  # over the preset's cap: one line naming it
        lambda: client.predict(vit, 1, 3, handle_file(str(path)), 10**6, 1.0, api_name="/accentuate"))
    assert "Layer 99 is out of range" in app_error(  # (tests/test_bad_input.py: no image, a server file)
        lambda: client.predict(vit, 99, 3, handle_file(str(path)), 3, 1.0, api_name="/accentuate"))


def test_an_accentuation_goes_into_the_session_gallery_named_with_the_uploads_hash(vit, tmp_path):
    """As the CLI writes it: one row, its objective naming the uploaded bytes' sha256 and the weight."""
    import base64
    import hashlib

    from spaces_config.presets import current_preset
    from vit_feature_viz.core.accentuate import HASH_DIGITS

    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    inline = {"url": "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode(), "orig_name": "photo.png"}
    explorer = Explorer(current_preset({"VFV_HARDWARE": "cpu-basic"}), ModelCache())
    *_, (gallery, session) = explorer.accentuate(vit, 1, 3, inline, 2, 0.5, session=None)
    assert len(gallery) == 4
    [row] = load_rows(session)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert row["objective"] == f"feature-accentuated(photo.png sha256:{sha[:HASH_DIGITS]} weight 0.5)"
    assert (row["layer"], row["feature"], row["recipe"]) == (1, 3, "accentuate")
    assert row["image"] is not None and row["image_patch_map"] is not None


def test_stop_ends_an_accentuation_at_its_next_step(vit, monkeypatch):
    """A Stop closes the request's generator: the accentuation in its thread ends at its next step, not after all."""
    from spaces_config.presets import current_preset
    from vit_feature_viz.core import accentuate as accentuation

    steps_run, real = [], accentuation.accentuate

    def counting(*args, callback, **options):
        def on_step(step, image):
            steps_run.append(step)
            callback(step, image)
        return real(*args, callback=on_step, **options)

    monkeypatch.setattr(accentuation, "accentuate", counting)
    preset = current_preset({"VFV_HARDWARE": "a10g-small"})
    photo = Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    request = Explorer(preset, ModelCache()).accentuate(vit, 1, 3, photo, preset.max_steps, 1.0)
    next(request)  # working: a heartbeat
    request.close()  # what a Stop does to the request
    for thread in [t for t in threading.enumerate() if t.name == "vfv-accentuate"]:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert 0 < len(steps_run) < preset.max_steps


def test_examples_from_a_local_dataset(client, vit, image_folder):
    gallery = client.predict(vit, 1, 4, str(image_folder), "train", 12, 3, api_name="/examples")
    assert len(gallery) == 6  # three images, each followed by its patch map
    assert gallery[0]["caption"].startswith("#1 · row ") and gallery[1]["caption"] == "#1 patch map"


def test_offline_the_dataset_box_holds_a_builtin_set_that_scans(server, client, vit, image_folder):
    """Offline (the suite's HF_HUB_OFFLINE=1) the Explore tab's Dataset box starts on a built-in shapes set, which
    scans with no network, and an empty Split box opens a folder at its own first split (this one has train only)."""
    boxes = {block.label: block.value for block in server.app.demo.blocks.values() if isinstance(block, gr.Textbox)}
    assert boxes["Dataset (Hub id or local folder)"] == "vit-feature-viz/shapes-shape"
    assert boxes["Split"] == ""
    gallery = client.predict(vit, 1, 4, "vit-feature-viz/shapes-shape", "", 12, 2, api_name="/examples")
    assert len(gallery) == 4
    gallery = client.predict(vit, 1, 4, str(image_folder), "", 12, 3, api_name="/examples")
    assert len(gallery) == 6


@pytest.fixture
def vit_loaded(client, vit):
    """The app has the tiny ViT in its model cache (from the offline test cache) before `hub` points it elsewhere."""
    client.predict(vit, api_name="/layers")
    return vit


def test_examples_of_one_image_read_only_the_first_shard_of_a_hub_dataset(client, vit_loaded, hub, tmp_path):
    import datasets

    images = datasets.Dataset.from_dict({"image": [Image.new("RGB", (36, 36), (30 * i, 90, 160)) for i in range(6)]})
    shards = push_parquet_shards(hub, "alice/three-shards", images.cast_column("image", datasets.Image()), 3,
                                 tmp_path / "shards")
    gallery = client.predict(vit_loaded, 1, 4, "alice/three-shards", "train", 1, 1, api_name="/examples")
    assert gallery[0]["caption"].startswith("#1 · row 0 · ")
    assert parquet_reads(hub, "alice/three-shards") == shards[:1]


# --- /patch_map reads only images uploaded to the app -------------------------------------------------------


def call_raw(url: str, endpoint: str, data: list) -> tuple[str, object]:
    """Call a named endpoint over gradio's plain HTTP API, as any client could (no gradio_client); returns the
    final server-sent event: ("complete", outputs) or ("error", message)."""
    import json

    import httpx

    with httpx.Client(base_url=url, timeout=60) as http:
        event_id = http.post(f"gradio_api/call/{endpoint}", json={"data": data}).raise_for_status().json()["event_id"]
        stream = http.get(f"gradio_api/call/{endpoint}/{event_id}").text
    events = [block.split("\n") for block in stream.strip().split("\n\n")]
    last = {line.partition(": ")[0]: line.partition(": ")[2] for line in events[-1]}
    return last["event"], json.loads(last["data"]) if last.get("data") else None


def upload_raw(url: str, path: Path) -> str:
    """Upload a file through gradio's /upload route; returns the server path gradio gives back."""
    import httpx

    with path.open("rb") as handle:
        response = httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, handle, "image/png")}, timeout=60)
    return response.raise_for_status().json()[0]


@pytest.fixture(scope="module")
def server_file(tmp_path_factory) -> Path:
    """An image that lives on the server but was never uploaded (as /etc/... or the owner's photos would)."""
    path = tmp_path_factory.mktemp("server-files") / "private.png"
    Image.new("RGB", (40, 40), (10, 200, 30)).save(path)
    return path


FILE_META = {"_type": "gradio.FileData"}


def test_patch_map_refuses_server_paths_over_raw_http(server, vit, server_file):
    path = str(server_file)
    for payload in ({"path": path}, {"path": path, "url": path}, {"path": "../" * 8 + path.lstrip("/")}):
        event, data = call_raw(server.url, "patch_map", [vit, 1, 3, payload, "feature", ""])
        assert event == "error" and "The image was not uploaded to this app" in str(data), (payload, data)
    for payload in ({"path": path, "meta": FILE_META}, path):  # gradio's own checks refuse these, without details
        assert call_raw(server.url, "patch_map", [vit, 1, 3, payload, "feature", ""]) == ("error", {"error": None})
    # a file gradio made for another request (a rendered image in its cache) was not uploaded either
    event, outputs = call_raw(server.url, "render", [vit, 1, "0", "feature", "paper", 2, 0, 0, None, "", False, False, 1,
                                                  "", "", ""])
    assert event == "complete"
    rendered = outputs[0][0]["image"]["path"]
    for payload in ({"path": rendered}, {"path": rendered, "meta": FILE_META}):
        event, data = call_raw(server.url, "patch_map", [vit, 1, 3, payload, "feature", ""])
        assert event == "error" and "not uploaded to this app" in str(data), (payload, data)


def test_patch_map_takes_uploads_and_inline_images_over_raw_http(server, vit, tmp_path):
    import base64

    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (200, 40, 40)).save(photo)
    uploaded = upload_raw(server.url, photo)
    inline = "data:image/png;base64," + base64.b64encode(photo.read_bytes()).decode()
    for payload in ({"path": uploaded, "meta": FILE_META}, {"path": uploaded}, {"url": inline}):
        event, data = call_raw(server.url, "patch_map", [vit, 1, 3, payload, "feature", ""])
        assert event == "complete", (payload, data)
        assert data[0]["path"] and data[0]["path"] != uploaded


def test_patch_map_refuses_server_paths_through_gradio_client(client, vit, server_file):
    message = app_error(lambda: client.predict(vit, 1, 3, {"path": str(server_file)}, api_name="/patch_map"))
    assert message.startswith("The image was not uploaded to this app: upload it")
    with Image.open(client.predict(vit, 1, 3, handle_file(str(server_file)), api_name="/patch_map")) as overlay:
        assert overlay.size == (320, 320)  # the same file, uploaded by the client, is fine


# --- clear errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (("no-such-org/no-such-model", 1, "0"), "'no-such-org/no-such-model' is not in the local cache"),
        (("", 1, "0"), "No model given"),
        (("{vit}", 9, "0"), "Layer 9 is out of range: 'tiny-org/vit-classifier' has 4 blocks, use 0-3."),
        (("{vit}", 1.5, "0"), "Layer must be a whole number"),
        (("{vit}", 1, "0-x"), "Cannot read feature spec '0-x'"),
        (("{vit}", 1, "500"), "Feature 500 is out of range: this layer has 128 features, use 0-127."),
        (("{vit}", 1, "random 999"), "Cannot draw 999 random features"),
        (("{resnet}", 1, "0"), "has no transformer blocks with an MLP"),
        (("{vit_pickle}", 1, "0"), "can run code when loaded: this app loads only safetensors weights, so pick a "
                                   "checkpoint that has a .safetensors file."),
    ],
)
def test_bad_render_input_gets_one_clear_line(client, tiny_repos, args, expected):
    model, layer, features = args
    message = app_error(lambda: render(client, model.format(**tiny_repos), layer, features, steps=2))
    assert expected in message


def test_bad_objective_recipe_and_image(client, vit, tmp_path):
    assert "Unknown objective 'glow'" in app_error(lambda: render(client, vit, objective="glow", steps=2))
    assert "Unknown recipe 'magic'" in app_error(lambda: render(client, vit, recipe="magic", steps=2))
    assert "upload an image" in app_error(lambda: client.predict(vit, 1, 3, None, api_name="/patch_map"))
    path = tmp_path / "photo.png"
    Image.new("RGB", (40, 40)).save(path)
    message = app_error(lambda: client.predict(vit, 1, 128, handle_file(str(path)), api_name="/patch_map"))
    assert "Feature 128 is out of range" in message
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    message = app_error(lambda: client.predict(vit, 1, 3, handle_file(str(not_an_image)), api_name="/patch_map"))
    assert "not an image" in message


def test_messages_name_the_apps_controls_not_cli_flags(client, tiny_repos):
    message = app_error(lambda: render(client, tiny_repos["clip"], objective="logit", steps=2))
    assert "has no classification head: set Objective to feature, or a classifier" in message
    assert "--" not in message


def test_an_error_names_its_setting_as_a_flag_in_the_cli_and_as_a_control_in_the_app():
    """The setting at fault is data (option=), so each surface words it: no message text is rewritten."""
    layer = VizError("Naming features needs a layer", option="layer", fix="{option:pass} N (a block index, from 0).")
    assert str(layer) == "Naming features needs a layer: pass --layer N (a block index, from 0)."
    assert layer.worded(common.APP) == "Naming features needs a layer: set Layer to N (a block index, from 0)."
    top_k = VizError("top_k must be at least 1, not 0", option="top_k", value=0, fix="{option:use e.g.} 8.")
    assert str(top_k) == "top_k must be at least 1, not 0: use e.g. --top-k 8."
    assert top_k.worded(common.APP) == "top_k must be at least 1, not 0: set Top k to e.g. 8."
    two = VizError("No region column", option="box_column", fix="{option:pass} NAME or {mask_column} NAME.")
    assert str(two) == "No region column: pass --box-column NAME or --mask-column NAME."
    assert two.worded(common.APP) == "No region column: set Box column to NAME or Mask column NAME."


def test_what_the_app_decides_itself_gets_the_apps_own_fix_and_the_gallery_is_the_visitors():
    token = VizError("the Hub rejected the request (401)", option="token", fix="log in with `hf auth login`",
                     note="; {gallery} is unchanged", gallery="/srv/sessions/gallery-x")
    assert str(token) == ("the Hub rejected the request (401): log in with `hf auth login`; the local gallery in "
                          "/srv/sessions/gallery-x is unchanged")
    assert token.worded(common.APP) == ("the Hub rejected the request (401): paste a Hugging Face token with write "
                                        "access in the Token field (or sign in on a Space); your gallery is unchanged")
    pickle = VizError("'m' only has pickle weights", option="allow_pickle", fix="{option:pass} if you trust it.")
    assert pickle.worded(common.APP) == ("'m' only has pickle weights: this app loads only safetensors weights, so "
                                         "pick a checkpoint that has a .safetensors file.")
    plain = VizError("No image given: upload an image to map.")
    assert plain.worded(common.APP) == str(plain) == "No image given: upload an image to map."


def test_an_error_keeps_its_fields_across_processes():
    import pickle

    sent = VizError("Dataset 'x' gave no images", option="max_images", fix="check the split and {option}.")
    received = pickle.loads(pickle.dumps(sent))
    assert str(received) == str(sent) == "Dataset 'x' gave no images: check the split and --max-images."
    assert received.worded(common.APP) == "Dataset 'x' gave no images: check the split and Max images."


def test_unexpected_errors_are_one_generic_line(client, vit, monkeypatch):
    def broken(self, model_id, revision=None, token=None):
        raise RuntimeError("internal detail /srv/secret")

    monkeypatch.setattr(ModelCache, "get", broken)
    message = app_error(lambda: client.predict(vit, api_name="/layers"))
    assert message == "Unexpected error while loading the model (RuntimeError): try again, or with other settings."


def test_render_along_an_uploaded_direction_negated_and_as_a_diverse_set(client, vit, tmp_path):
    """Issue 20 in the Render tab: an uploaded unit vector renders its channel's image exactly; two typed features
    with Negative and Diversity 2 give a set of two captioned images; a set over the image cap is refused."""
    import numpy as np

    np.save(tmp_path / "eye.npy", np.eye(128, dtype=np.float32))  # the tiny ViT's fc1 width
    plain = render(client, vit, 1, "2", steps=2)[0][0]
    along = client.predict(vit, 1, "2", "feature", "paper", 2, 0, 0, handle_file(str(tmp_path / "eye.npy")), "",
                           False, False, 1, api_name="/render")[0][0]
    with Image.open(plain["image"]) as a, Image.open(along["image"]) as b:
        assert a.tobytes() == b.tobytes()
    assert "feature-direction(eye.npy sha256:" in along["caption"]
    images, table = client.predict(vit, 1, "0", "feature", "paper", 2, 0, 0, None, "3-4", False, True, 2,
                                   api_name="/render")
    assert [item["caption"].split(" · ")[1] for item in images] == [
        f"feature-direction(difference:3,4)-negative-facet{k}of2" for k in (1, 2)]
    message = app_error(lambda: client.predict(vit, 1, "0-1", "feature", "paper", 2, 0, 0, None, "", False, False, 2,
                                               api_name="/render"))
    assert "4 images is over this Space's cap of 3 images per request" in message


# --- caps ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(steps=6), "6 steps is over this Space's cap of 5 steps per request (max steps, hardware preset cpu-basic)"),
        (dict(features="0-3"), "4 features asked for, more than the 3 allowed per request: ask for fewer, e.g. 0-2."),
        (dict(features="all"), "128 features asked for, more than the 3 allowed per request"),
        (dict(features="0-30000000"), "Feature 128 is out of range: this layer has 128 features"),  # no list built
        (dict(features="0-99,200-30000000"), "Feature 200 is out of range"),
        (dict(image_size=64), "64 px is over this Space's cap of 48 px per request (max image size"),
    ],
)
def test_render_caps_are_enforced(client, vit, kwargs, expected):
    options = dict(features="0", steps=2) | kwargs
    features = options.pop("features")
    assert expected in app_error(lambda: render(client, vit, 1, features, **options))


@pytest.mark.parametrize("build, source", [(_declares_vit_large, "as its config declares"),
                                           (_header_claims_a_huge_tensor, "in its weight files")])
def test_an_oversized_model_is_refused_before_its_weights_are_downloaded(client, hub, tmp_path, build, source):
    """The preset's model-size cap (10M parameters here) holds for every endpoint: the loopback Hub sees requests
    for the config and, at most, a ranged read of the weight file's header, never a download of the weights."""
    repo = f"alice/{build.__name__.strip('_')}"
    build(tmp_path / "repo")
    _push_model(hub, repo, tmp_path / "repo")
    hub.requests.clear()
    for call in (lambda: client.predict(repo, api_name="/layers"), lambda: render(client, repo, steps=2)):
        message = app_error(call)
        assert f"({source}), more than the 10M allowed here: pick a smaller checkpoint." in message
    weights = [(path, status) for method, path, status in hub.requests if method == "GET" and ".safetensors" in path]
    assert all(status == 206 for _, status in weights), weights
    assert bool(weights) == (source == "in its weight files")


def test_examples_caps_are_enforced(client, vit, image_folder):
    message = app_error(lambda: client.predict(vit, 1, 4, str(image_folder), "train", 50, 2, api_name="/examples"))
    assert "50 images is over this Space's cap of 20 images per request (max dataset images" in message
    message = app_error(lambda: client.predict(vit, 1, 4, str(image_folder), "train", 10, 9, api_name="/examples"))
    assert "cap of 4 examples" in message


def test_ui_caps_follow_the_preset(server):
    config = server.app.demo.config
    steps = next(c for c in config["components"] if c["props"].get("elem_id") == "steps")
    assert steps["props"]["maximum"] == 5
    assert any("up to 5 steps, 3 feature(s), 48 px" in str(c["props"].get("value")) for c in config["components"])


def test_app_py_runs_as_a_script_with_server_env(tiny_repos, tmp_path):
    """`python app.py` honours GRADIO_SERVER_NAME/PORT and the preset env, and inherits the HF cache env."""
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), VFV_HARDWARE="cpu-basic",
               VFV_MAX_STEPS="2", PYTHONUNBUFFERED="1")
    log = (tmp_path / "app.log").open("w")
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=tmp_path, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert process.poll() is None, (tmp_path / "app.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "app.py did not start within 120 s"
                time.sleep(0.1)
        remote = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert len(remote.predict(tiny_repos["vit"], api_name="/layers")["layers"]) == 4
        message = app_error(lambda: render(remote, tiny_repos["vit"], steps=3))
        assert "cap of 2 steps" in message
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


# --- long jobs can be cancelled -----------------------------------------------------------------------------


def cancel_and_wait(job) -> None:
    """Cancel a job and check that the render thread behind it really stops."""
    job.cancel()
    deadline = time.monotonic() + 10
    while any(t.name == "vfv-render" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the render thread kept running after cancel"
        time.sleep(0.1)
    assert job.status().code.name == "CANCELLED"


def test_cancel_stops_the_render(tiny_repos):
    from spaces_config.presets import current_preset

    app = load_app("vfv_space_app_cancel")
    demo = app.build_demo(current_preset({"VFV_MAX_STEPS": "400"}))
    url = serve(demo)
    try:
        remote = Client(url, verbose=False)
        job = remote.submit(tiny_repos["vit"], 1, "0,1", "feature", "paper", 400, 0, 0, api_name="/render")
        deadline = time.monotonic() + 60
        while not any(isinstance(out[0], list) for out in job.outputs()):  # the first streamed preview
            assert time.monotonic() < deadline and not job.done()
            time.sleep(0.2)
        assert any(t.name == "vfv-render" for t in threading.enumerate())
        cancel_and_wait(job)
    finally:
        demo.close()


def test_cancel_keeps_the_features_that_finished_before_it(tiny_repos, tmp_path, monkeypatch):
    """Stop after the first batch: the session gallery (what download and push use) holds that batch's feature."""
    import importlib

    from spaces_config.presets import current_preset
    from vit_feature_viz.store.folder import GalleryFolder

    render_module = importlib.import_module("vit_feature_viz.core.render")  # the package exports a function `render`

    monkeypatch.setattr(common, "SESSION_ROOT", tmp_path / "sessions")
    for device in ("cpu", "cuda"):  # one feature per batch
        monkeypatch.setitem(render_module.IMAGES_PER_BATCH, device, 1)
    real_chunk = render_module._render_chunk

    def hold_later_batches(model, plan, chunk, seed, bar, callback, every):
        """The first batch renders for real; later ones wait for the Stop, so it surely lands between."""
        if list(chunk) != list(plan.features[:1]):  # chunk: a list; plan.features: a tuple
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                callback(0, {})  # raises once the request is gone, as a real step would
                time.sleep(0.05)
        return real_chunk(model, plan, chunk, seed, bar, callback, every)

    monkeypatch.setattr(render_module, "_render_chunk", hold_later_batches)
    app = load_app("vfv_space_app_cancel_keeps")
    preset = current_preset({"VFV_MAX_FEATURES": "3"})
    demo = app.build_demo(preset)
    url = serve(demo)
    try:
        remote = Client(url, verbose=False)
        job = remote.submit(tiny_repos["vit"], 1, "0,1,2", "feature", "paper", 4, 0, 0, api_name="/render")

        def captions():
            return [item["caption"] for out in job.outputs() if isinstance(out[0], list) for item in out[0]]

        deadline = time.monotonic() + 60
        while not any(c.startswith("feature 0 · activation") for c in captions()):  # batch 1 done and shown
            assert time.monotonic() < deadline and not job.done(), captions()
            time.sleep(0.1)
        cancel_and_wait(job)

        state = next(b for b in demo.blocks.values() if isinstance(b, gr.State))
        folder = demo.state_holder[remote.session_hash][state._id]
        assert folder and Path(folder).parent == tmp_path / "sessions"
        assert sorted(key[2] for key in GalleryFolder(folder).keys()) == [0]
        assert "1 feature(s)" in Sharing.gallery_status(folder)
        import datasets

        rows = datasets.load_dataset("parquet", data_files=Sharing.download("parquet", folder), split="train")
        assert rows["feature"] == [0] and rows[0]["steps"] == 4
    finally:
        demo.close()


def test_stop_button_cancels_render_scan_and_map(server):
    config = server.app.demo.config
    by_id = {d["id"]: d for d in config["dependencies"]}
    names = {d["id"]: d.get("api_name") for d in config["dependencies"]}
    stop = next(d for d in config["dependencies"] if d.get("cancels"))
    assert {"render", "examples", "patch_map"} <= {names[i] for i in stop["cancels"]}  # and other tabs' jobs
    assert all(by_id[i]["queue"] is not False for i in stop["cancels"])


def test_gpu_work_runs_inside_spaces_gpu_with_a_duration_from_the_request(vit, image_folder, monkeypatch):
    """On ZeroGPU the `spaces` package wraps the device work; its duration is computed from each request."""
    from spaces_config.presets import current_preset

    asked = []

    class FakeSpaces:  # stands in for the `spaces` package, which only exists on Spaces
        @staticmethod
        def GPU(duration):
            def wrap(task):
                def run(*args):
                    asked.append((task.__name__, duration(*args)))
                    return task(*args)
                return run
            return wrap

    monkeypatch.setattr(common, "spaces", FakeSpaces)
    preset = current_preset({"VFV_HARDWARE": "zero-a10g"})
    models = ModelCache()
    renderer, explorer = Renderer(preset, models), Explorer(preset, models)
    *_, (images, table, folder) = renderer.render(vit, 1, "0,1", "feature", "paper", 3, 0, 0, None, progress=no_progress)
    assert len(images) == 2
    explorer.examples(vit, 1, 4, str(image_folder), "train", 12, 2, folder, progress=no_progress)
    assert asked == [("_render_stream", preset.gpu_duration(2, 3)),
                     ("_scan", explorer._scan_duration(None, "", "", 12, 2))]
    assert 20 <= asked[0][1] <= preset.max_gpu_seconds


def test_local_paths_are_refused_on_a_space(monkeypatch, vit):
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "owner/vit-feature-viz")
    with pytest.raises(VizError, match="local path: on this Space enter a Hub dataset id"):
        common.check_name("/etc", "dataset", "uoft-cs/cifar10")
    assert common.check_name(" org/name ", "model", "x/y") == "org/name"


def test_no_event_checks_a_slider_against_bounds_it_sent_before(server):
    """Two structure reads racing leave a slider value the newer bounds reject: gradio's check then fails the
    event and the slider keeps a layer the model lacks (the browser test's flake). Every handler that takes a
    slider checks the value itself instead."""
    takes_slider = [fn for fn in server.app.demo.fns.values() if any(isinstance(c, gr.Slider) for c in fn.inputs)]
    assert len(takes_slider) >= 6
    assert [fn.name for fn in takes_slider if fn.preprocess] == []


def test_an_image_returned_again_is_never_rewritten_under_a_fetch(server, tmp_path):
    """Gradio rewrote a returned image's cache file in place on every update; a browser fetching it meanwhile got a
    truncated file. Returned again and again, the served file is always whole."""
    from gradio import processing_utils

    from vit_feature_viz.app.served_images import save_pil_to_cache_once

    assert processing_utils.save_pil_to_cache is save_pil_to_cache_once  # the app installed it
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    gallery = gr.Gallery(format="png")
    first = Path(gallery.postprocess([(image, "a")]).root[0].image.path)
    size, sizes, done = first.stat().st_size, [], threading.Event()

    def watch():
        while not done.is_set():
            sizes.append(first.stat().st_size)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(100):
            assert Path(gallery.postprocess([(image, "a")]).root[0].image.path) == first
    finally:
        done.set()
        watcher.join()
    assert sizes and set(sizes) == {size}
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no staging file left behind


def test_app_renders_prompts_when_the_model_has_a_text_tower(client, short_context_clips):
    """A CLIP text prompt (issue 20; the library's side: tests/test_prompts.py): one image a prompt line."""
    from vit_feature_viz.app.render_tab import prompt_box

    assert prompt_box({"text_tower": True}).visible is True
    assert prompt_box({"text_tower": False}).visible is False and prompt_box(None).visible is False
    repo = short_context_clips["open_clip_short"]
    images, table = client.predict(repo, 0, "0-2", "feature", "fast", 2, 0, 0, None, "", False, False, 1,
                                   "red dog\n\ngreen tree", "cat", api_name="/render")
    assert [item["caption"].split(" · ")[:2] for item in images] == [
        ["feature 0", 'prompt("red dog" | "green tree" - "cat")'], ["feature 1", 'prompt("red dog" | "green tree" - "cat")']]
    assert [row[0] for row in table["data"]] == [0, 1]  # one image a prompt, whatever Features said
