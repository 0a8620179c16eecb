"""The Gradio app, served on a free loopback port and called through gradio_client like any API user would.

Tiny random checkpoints come from the offline test cache (conftest.py); the app runs with a tiny hardware
preset set through the environment, so the caps are small enough to cross in a test.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gradio as gr  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from PIL import Image  # noqa: E402

from hub_fixtures import IGNORE_CLIENT_UPLOAD_WARNING, assert_error_without_token, load_fresh  # noqa: E402
from vit_feature_viz.app import common  # noqa: E402
from vit_feature_viz.app.common import ModelCache  # noqa: E402
from vit_feature_viz.app.explore_tab import Explorer  # noqa: E402
from vit_feature_viz.app.render_tab import Renderer  # noqa: E402
from vit_feature_viz.app.sharing_tab import Sharing  # noqa: E402
from vit_feature_viz.errors import VizError  # noqa: E402

pytestmark = [pytest.mark.slow, IGNORE_CLIENT_UPLOAD_WARNING]

CAPS = {  # a tiny preset, chosen by env exactly as a Space owner would
    "VFV_HARDWARE": "cpu-basic",
    "VFV_MAX_STEPS": "5",
    "VFV_MAX_FEATURES": "3",
    "VFV_MAX_IMAGE_SIZE": "48",
    "VFV_MAX_SCAN_IMAGES": "20",
    "VFV_MAX_TOP_K": "4",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_app(name: str = "vfv_space_app"):
    """Import app.py (the Space entry point) as a module; its `demo` is built from the environment."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve(demo) -> str:
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def server(tiny_repos):
    with pytest.MonkeyPatch.context() as env:
        for key, value in CAPS.items():
            env.setenv(key, value)
        app = load_app()
    url = serve(app.demo)
    try:
        yield SimpleNamespace(url=url, app=app)
    finally:
        app.demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def vit(tiny_repos):
    return tiny_repos["vit"]


def render(client, model, layer=1, features="0-2", *, objective="feature", recipe="paper", steps=3, image_size=0,
           seed=0):
    return client.predict(model, layer, features, objective, recipe, steps, image_size, seed, api_name="/render")


def app_error(call) -> str:
    with pytest.raises(AppError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """A tiny imagefolder dataset: 12 random images of odd sizes in a train split."""
    import numpy as np

    root = tmp_path_factory.mktemp("images")
    (root / "train").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40 + i, 48, 3), dtype=np.uint8)).save(root / "train" / f"{i}.png")
    return root


# --- the API ------------------------------------------------------------------------------------------------


def test_named_endpoints_and_their_parameters(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    params = {name: [p["parameter_name"] for p in info["parameters"]] for name, info in endpoints.items()}
    assert params["/layers"] == ["model_id"]
    assert params["/render"] == ["model_id", "layer", "features", "objective", "recipe", "steps", "image_size", "seed"]
    assert params["/patch_map"] == ["model_id", "layer", "feature", "image"]
    assert [r["component"] for r in endpoints["/render"]["returns"]] == ["Gallery", "Dataframe"]
    assert not {"/download", "/push", "/pickers", "/feature_picker"} & set(endpoints)  # UI-only helpers stay private


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


def test_render_open_clip_with_another_recipe(client, tiny_repos):
    images, table = render(client, tiny_repos["open_clip"], 3, "5", recipe="fourier", steps=2)
    assert len(images) == 1 and table["data"][0][0] == 5


def test_patch_map_returns_the_overlay(client, vit, tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (200, 40, 40)).save(path)
    overlay = client.predict(vit, 1, 3, handle_file(str(path)), api_name="/patch_map")
    with Image.open(overlay) as image:
        assert image.size == (32, 32)  # the model-size crop the model saw


def test_examples_from_a_local_dataset(client, vit, image_folder):
    gallery = client.predict(vit, 1, 4, str(image_folder), "train", 12, 3, api_name="/examples")
    assert len(gallery) == 6  # three images, each followed by its patch map
    assert gallery[0]["caption"].startswith("#1 · row ") and gallery[1]["caption"] == "#1 patch map"


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


def test_unexpected_errors_are_one_generic_line(client, vit, monkeypatch):
    def broken(self, model_id, revision=None):
        raise RuntimeError("internal detail /srv/secret")

    monkeypatch.setattr(ModelCache, "get", broken)
    message = app_error(lambda: client.predict(vit, api_name="/layers"))
    assert message == "Unexpected error while loading the model (RuntimeError): try again, or with other settings."


# --- caps ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(steps=6), "6 steps is over this Space's cap of 5 steps per request (max steps, hardware preset cpu-basic)"),
        (dict(features="0-3"), "4 features is over this Space's cap of 3 features per request (max features"),
        (dict(features="all"), "128 features is over this Space's cap of 3 features"),
        (dict(image_size=64), "64 px is over this Space's cap of 48 px per request (max image size"),
    ],
)
def test_render_caps_are_enforced(client, vit, kwargs, expected):
    options = dict(features="0", steps=2) | kwargs
    features = options.pop("features")
    assert expected in app_error(lambda: render(client, vit, 1, features, **options))


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
                time.sleep(0.5)
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
    from vit_feature_viz.gallery import GalleryFolder

    render_module = importlib.import_module("vit_feature_viz.render")  # the package exports a function `render`

    monkeypatch.setattr(common, "SESSION_ROOT", tmp_path / "sessions")
    for device in ("cpu", "cuda"):  # one feature per batch
        monkeypatch.setitem(render_module.IMAGES_PER_BATCH, device, 1)
    real_chunk = render_module._render_chunk

    def hold_later_batches(model, plan, chunk, seed, bar, callback, every):
        """The first batch renders for real; later ones wait for the Stop, so it surely lands between."""
        if chunk != plan.features[:1]:
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
        job = remote.submit(tiny_repos["vit"], 1, "0,1,2", "feature", "paper", 20, 0, 0, api_name="/render")

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
        assert rows["feature"] == [0] and rows[0]["steps"] == 20
    finally:
        demo.close()


def test_stop_button_cancels_render_scan_and_map(server):
    config = server.app.demo.config
    by_id = {d["id"]: d for d in config["dependencies"]}
    names = {d["id"]: d.get("api_name") for d in config["dependencies"]}
    stop = next(d for d in config["dependencies"] if d.get("cancels"))
    assert {names[i] for i in stop["cancels"]} == {"render", "examples", "patch_map"}
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
                     ("_scan", explorer._scan_duration(vit, 1, 4, "", "", 12, 2))]
    assert 20 <= asked[0][1] <= preset.max_gpu_seconds


# --- the session gallery: download and push --------------------------------------------------------------


def no_progress(*args, **kwargs):
    pass


@pytest.fixture
def session(vit, tmp_path, monkeypatch):
    """A session gallery with two rendered features, made through the same function /render calls."""
    monkeypatch.setattr(common, "SESSION_ROOT", tmp_path / "sessions")
    preset = SimpleNamespace(name="test", max_steps=5, max_features=3, max_image_size=48, max_scan_images=20,
                             max_top_k=4, max_gpu_seconds=60, gpu_duration=lambda features, steps: 60)
    renderer = Renderer(preset, ModelCache())
    *_, (images, table, folder) = renderer.render(vit, 1, "0,1", "feature", "paper", 2, 0, 0, None, progress=no_progress)
    assert len(images) == 2 and len(table) == 2
    return SimpleNamespace(logic=Sharing(), folder=folder)


def test_download_parquet_and_zip(session):
    import datasets

    parquet = session.logic.download("parquet", session.folder)
    rows = datasets.load_dataset("parquet", data_files=parquet, split="train")
    assert sorted(rows["feature"]) == [0, 1] and rows[0]["image"].size == (32, 32)
    archive = session.logic.download("zip", session.folder)
    names = zipfile.ZipFile(archive).namelist()
    assert "vit-feature-viz-gallery/README.md" in names
    assert any(n.startswith("vit-feature-viz-gallery/data/") and n.endswith(".parquet") for n in names)
    assert not any("/." in n for n in names)
    assert "2 feature(s)" in session.logic.gallery_status(session.folder)


def test_download_of_an_empty_gallery_is_a_clear_error(session):
    with pytest.raises(gr.Error, match="Your gallery is empty"):
        session.logic.download("parquet", None)


# --- pushing the session gallery, with the real huggingface_hub client, to the loopback Hub (tests/hub_server.py)


def session_rows(folder) -> list[dict]:
    from vit_feature_viz.gallery import GalleryFolder

    return sorted(GalleryFolder(folder).rows(), key=lambda r: r["feature"])


def assert_hub_holds_the_session(monkeypatch, tmp_path, repo_id: str, folder, name: str, token=None) -> None:
    """load_dataset (with `token`, fresh cache) gets the session's rows: same features and image pixels."""
    import numpy as np

    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    else:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    loaded = sorted(load_fresh(monkeypatch, tmp_path, repo_id, name), key=lambda r: r["feature"])
    mine = session_rows(folder)
    assert [r["feature"] for r in loaded] == [r["feature"] for r in mine] == [0, 1]
    for ours, theirs in zip(mine, loaded):
        assert (theirs["model_id"], theirs["layer"]) == (ours["model_id"], ours["layer"])
        assert theirs["activation"] == pytest.approx(ours["activation"])
        assert np.array_equal(np.asarray(theirs["image"]), np.asarray(ours["image"]))


def visitor(token: str):
    """What gradio hands push() for a visitor signed in as alice."""
    oauth = gr.OAuthToken(token=token, scope="write-repos", expires_at=0)
    profile = gr.OAuthProfile({"name": "Alice", "preferred_username": "alice", "profile": "", "picture": ""})
    return oauth, profile


def on_a_space(monkeypatch, space_secret: str) -> None:
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "owner/vit-feature-viz")
    monkeypatch.setenv("HF_TOKEN", space_secret)  # the Space's own secret: never used for a visitor's push
    assert common.on_space()


def test_local_push_uses_the_local_token(session, hub, monkeypatch, tmp_path):
    monkeypatch.delenv("SYSTEM", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("HF_TOKEN", hub.write_token)
    assert not common.on_space()

    message = session.logic.push("alice/my-gallery", True, session.folder, None, None)

    assert "Pushed 2 feature(s)" in message and f"{hub.url}/datasets/alice/my-gallery" in message
    assert "README.md" in hub.files("alice/my-gallery")
    assert hub.repos[("dataset", "alice/my-gallery")].private
    assert_hub_holds_the_session(monkeypatch, tmp_path, "alice/my-gallery", session.folder, "local",
                                 token=hub.read_token)


def test_space_push_needs_sign_in_and_goes_to_the_visitors_namespace(session, hub, monkeypatch, tmp_path):
    on_a_space(monkeypatch, space_secret=hub.write_token)  # a usable secret: a fallback to it would push
    with pytest.raises(gr.Error, match="Sign in with Hugging Face"):
        session.logic.push("gallery", False, session.folder, None, None)
    assert hub.commits == []

    on_a_space(monkeypatch, space_secret="hf_space_owner_secret")  # unknown to the Hub: using it would fail
    token, profile = visitor(hub.write_token)
    with pytest.raises(gr.Error, match="only into your own namespace: use alice/gallery"):
        session.logic.push("someone-else/gallery", False, session.folder, token, profile)
    assert hub.commits == []

    assert "Pushed 2 feature(s)" in session.logic.push("gallery", False, session.folder, token, profile)
    assert "Pushed 2 feature(s)" in session.logic.push("alice/other", False, session.folder, token, profile)
    assert {c.repo_id for c in hub.commits} == {"alice/gallery", "alice/other"}
    assert_hub_holds_the_session(monkeypatch, tmp_path, "alice/gallery", session.folder, "space")


@pytest.mark.parametrize("where", ["local", "space"])
def test_push_with_a_wrong_token_is_one_line_without_the_token(session, hub, monkeypatch, where):
    wrong = "hf_thisIsNotAValidToken123"
    if where == "space":
        on_a_space(monkeypatch, space_secret=hub.write_token)
        oauth = visitor(wrong)
    else:
        monkeypatch.delenv("SYSTEM", raising=False)
        monkeypatch.setenv("HF_TOKEN", wrong)
        oauth = (None, None)
    with pytest.raises(gr.Error) as excinfo:
        session.logic.push("alice/gallery", False, session.folder, *oauth)
    assert_error_without_token(excinfo, "rejected the request as unauthenticated (401)", "your gallery", token=wrong)
    assert str(session.folder) not in str(excinfo.value)  # the server's folder is none of the visitor's business
    assert hub.commits == []


def test_gradio_injects_the_oauth_arguments_of_push(server):
    """gradio fills gr.OAuthToken / gr.OAuthProfile parameters from the session (None when signed out)."""
    from gradio.helpers import special_args

    inputs, *_ = special_args(Sharing.push, inputs=["name", False, "/tmp/x"], request=None)
    assert inputs == ["name", False, "/tmp/x", None, None]


def test_local_paths_are_refused_on_a_space(monkeypatch, vit):
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "owner/vit-feature-viz")
    with pytest.raises(VizError, match="local path: on this Space enter a Hub dataset id"):
        common.check_name("/etc", "dataset", "uoft-cs/cifar10")
    assert common.check_name(" org/name ", "model", "x/y") == "org/name"
