"""On a public Space whose owner set HF_TOKEN, a visitor reads only what their own token may read.

app.py is served as on a Space (SYSTEM=spaces, SPACE_ID, the owner's HF_TOKEN = alice's write token on the
loopback Hub of tests/hub_server.py) and called over HTTP with gradio_client, as a visitor would. alice's private
gallery, image dataset and model must not reach an anonymous visitor through any endpoint (Explore open, layer,
feature page, compare, deep link, dataset examples, analyses, model loads), not even after a visitor with a token
got them into the server's caches. A visitor's own token, the stand-in for the OAuth token gradio hands an event
(gradio_client's `oauth_token`, which gradio injects into `gr.OAuthToken` parameters), reads what it may.
"""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import datasets
import gradio as gr
import httpx
import numpy as np
import pytest
from gradio_client import Client
from huggingface_hub import HfApi, HfFileSystem
from PIL import Image

from app_fixtures import CAPS, app_error, load_app, serve
from gallery_fixtures import MODEL
from hub_fixtures import IGNORE_CLIENT_UPLOAD_WARNING, point_clients_at
from hub_server import LoopbackHub, User
from vit_feature_viz.app import common
from vit_feature_viz.app.common import visitor_token

pytestmark = [pytest.mark.slow, IGNORE_CLIENT_UPLOAD_WARNING]

SPACE_ID = "owner/vit-feature-viz"
PRIVATE_GALLERY, PUBLIC_GALLERY = "alice/private-gallery", "alice/public-gallery"
PRIVATE_IMAGES, PUBLIC_IMAGES = "alice/private-images", "alice/public-images"
PRIVATE_VIT, PUBLIC_VIT = "alice/private-vit", "alice/public-vit"
# open_clip is probed first (open_clip_config.json): once its files are cached, huggingface_hub would serve them
# all to an anonymous download the Hub refuses, which the app must not let happen
PRIVATE_CLIP = "alice/private-open-clip"
BOB_TOKEN = "hf_loopback_bob_read_0123456789"  # a visitor who may read bob's repos, none of alice's private ones
SAE_CAP = 100_000  # parameters of an SAE a visitor names: a 64-latent SAE of the tiny ViT fits, a 1,024-latent one not
NOT_FOUND = "not found"  # private repos are hidden: the Hub answers 404, and the app says so in one line


def image_dataset_folder(root, images: int = 6):
    """A Hub-style image dataset folder (a test split of PNGs with integer labels the tiny classifier knows)."""
    rng = np.random.default_rng(1)
    rows = {"image": [Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)) for _ in range(images)],
            "label": [i % 10 for i in range(images)]}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    (root / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(root / "data" / "test-00000-of-00001.parquet"))
    return root


def fill_the_hub(hub, models: dict, gallery, root) -> None:
    """alice's private and public gallery, image dataset and models, pushed with her write token."""
    from vit_feature_viz.store.hub import push_gallery

    api = HfApi(endpoint=hub.url, token=hub.write_token)
    for repo, private in ((PRIVATE_GALLERY, True), (PUBLIC_GALLERY, False)):
        push_gallery(gallery, repo, private=private, token=hub.write_token)
    images = image_dataset_folder(root / "images")
    for repo, private in ((PRIVATE_IMAGES, True), (PUBLIC_IMAGES, False)):
        api.create_repo(repo, repo_type="dataset", private=private)
        api.upload_folder(folder_path=str(images), repo_id=repo, repo_type="dataset")
    for repo, folder in models.items():
        api.create_repo(repo, private=repo != PUBLIC_VIT)
        api.upload_folder(folder_path=folder, repo_id=repo)


@pytest.fixture(scope="module")
def space(tiny_repos, browse_gallery, tmp_path_factory):  # noqa: F811 (browse_gallery is a fixture)
    """app.py served as on a Space whose owner's HF_TOKEN (alice's write token) could read all of alice's repos."""
    from huggingface_hub import snapshot_download

    vit, clip = (snapshot_download(tiny_repos[role], local_files_only=True) for role in ("vit", "open_clip"))
    models = {PRIVATE_VIT: vit, PUBLIC_VIT: vit, PRIVATE_CLIP: clip}  # read before the caches move
    root = tmp_path_factory.mktemp("space-privacy")
    with LoopbackHub() as hub, pytest.MonkeyPatch.context() as env:
        hub.tokens[BOB_TOKEN] = User("bob", can_write=False, namespaces=("bob",))
        point_clients_at(env, hub.url, root / "hf-home")
        fill_the_hub(hub, models, browse_gallery, root)
        for key, value in {**CAPS, "SYSTEM": "spaces", "SPACE_ID": SPACE_ID, "HF_TOKEN": hub.write_token,
                           "VFV_MAX_SAE_PARAMETERS": str(SAE_CAP),
                           # gradio's real sign-in needs gradio[oauth] (authlib, itsdangerous), not installed here:
                           # visitors' tokens come through the API, as gradio_client's oauth_token sends them
                           "VFV_OAUTH": "0"}.items():
            env.setenv(key, value)
        env.setattr(common, "SESSION_ROOT", root / "sessions")
        assert common.on_space()
        app = load_app("vfv_space_privacy_app")
        env.delenv("SYSTEM")  # launch() would start gradio's Spaces hot-reloader (the spaces package): not ours
        url = serve(app.demo)
        env.setenv("SYSTEM", "spaces")  # the app asks on every request
        try:
            yield SimpleNamespace(url=url, app=app, hub=hub, env=env)
        finally:
            app.demo.close()
    HfFileSystem.clear_instance_cache()


def visitor(space, token: str | None = None) -> Client:
    """A visitor's client: anonymous (no token of any kind), or signed in with `token` (the OAuth stand-in)."""
    return Client(space.url, token=False, oauth_token=token, verbose=False)


def open_link(space, query: str, token: str | None = None) -> tuple[bool, object]:
    """The page-load event that opens a deep link, over HTTP as the browser's client calls it (queue/join with the
    page's query string); returns (success, outputs) or (False, the error line)."""
    fns = space.app.demo.fns.values()
    fn_index = next(fn._id for fn in fns if getattr(fn.fn, "__name__", "") == "from_link")
    session = uuid.uuid4().hex
    body = {"data": [], "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None,
            **({"oauth_token": token} if token else {})}
    with httpx.Client(base_url=space.url, timeout=120) as http:
        http.post(f"gradio_api/queue/join?{query}", json=body).raise_for_status()
        with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as events:
            for line in events.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed":
                    output = message.get("output") or {}
                    return message.get("success", False), output.get("data") or output.get("error")
    raise AssertionError("the deep link's event never completed")


def examples(client, model, dataset):
    return client.predict(model, 1, 0, dataset, "test", 6, 2, api_name="/examples")


def analyze(client, model, dataset, experiment="CLS isolation"):
    return client.predict(model, experiment, dataset, "test", 6, 0, 0, api_name="/analyze")


def refused(call) -> str:
    """The one-line error of a call the visitor may not make."""
    message = app_error(call)
    assert NOT_FOUND in message, message
    return message


def assert_reads_nothing_private(client, space) -> None:
    """Every way the app reads a private repo of alice's, refused in one line for this visitor."""
    refused(lambda: client.predict(PRIVATE_GALLERY, api_name="/open_gallery"))
    refused(lambda: client.predict(PRIVATE_GALLERY, MODEL, 1, "feature", 1, api_name="/show_layer"))
    refused(lambda: client.predict(PRIVATE_GALLERY, MODEL, 1, "feature", 2, api_name="/feature_page"))
    refused(lambda: client.predict(PUBLIC_GALLERY, MODEL, 1, "feature", PRIVATE_GALLERY, "0-1", api_name="/compare"))
    refused(lambda: examples(client, PUBLIC_VIT, PRIVATE_IMAGES))
    refused(lambda: analyze(client, PUBLIC_VIT, PRIVATE_IMAGES))
    refused(lambda: client.predict(PRIVATE_VIT, api_name="/layers"))
    refused(lambda: client.predict(PRIVATE_CLIP, api_name="/layers"))
    refused(lambda: examples(client, PRIVATE_VIT, PUBLIC_IMAGES))
    token = getattr(client, "oauth_token", None)
    opened, message = open_link(space, f"gallery={PRIVATE_GALLERY}&layer=1&feature=2", token)
    assert not opened and NOT_FOUND in message and "\n" not in message, message


def test_an_anonymous_visitor_gets_nothing_private_and_everything_public(space):
    from vit_feature_viz.store.pages import open_gallery

    assert open_gallery(PRIVATE_GALLERY).models() == [MODEL]  # None reads with the owner's token: the threat is real
    anonymous = visitor(space)
    assert_reads_nothing_private(anonymous, space)

    source, *_, summary = anonymous.predict(PUBLIC_GALLERY, api_name="/open_gallery")
    assert source == PUBLIC_GALLERY and "6 features" in summary
    header = anonymous.predict(PUBLIC_GALLERY, MODEL, 1, "feature", 2, api_name="/feature_page")[0]
    assert "Layer 1 · feature 2" in header
    opened, outputs = open_link(space, f"gallery={PUBLIC_GALLERY}&layer=1&feature=2")
    assert opened and outputs[0] == PUBLIC_GALLERY
    assert len(examples(anonymous, PUBLIC_VIT, PUBLIC_IMAGES)) == 4  # two images, each with its patch map
    plot, table, summary = analyze(anonymous, PUBLIC_VIT, PUBLIC_IMAGES)
    assert table["data"] and PUBLIC_VIT.split("/")[1] in summary


def test_a_visitors_own_token_reads_what_it_may_and_serves_no_one_else(space):
    alice = visitor(space, space.hub.read_token)  # alice herself, signed in: her token may read her private repos
    source, *_ = alice.predict(PRIVATE_GALLERY, api_name="/open_gallery")
    assert source == PRIVATE_GALLERY
    assert "feature 2" in alice.predict(PRIVATE_GALLERY, MODEL, 1, "feature", 2, api_name="/feature_page")[0]
    left, right, _ = alice.predict(PUBLIC_GALLERY, MODEL, 1, "feature", PRIVATE_GALLERY, "0-1", api_name="/compare")
    assert len(left) == len(right) == 2 and "not here" not in json.dumps(right)
    opened, outputs = open_link(space, f"gallery={PRIVATE_GALLERY}&layer=1&feature=2", space.hub.read_token)
    assert opened and outputs[0] == PRIVATE_GALLERY
    assert alice.predict(PRIVATE_VIT, api_name="/layers")["model_id"] == PRIVATE_VIT
    assert alice.predict(PRIVATE_CLIP, api_name="/layers")["backend"] == "open_clip"
    assert len(examples(alice, PRIVATE_VIT, PRIVATE_IMAGES)) == 4
    assert analyze(alice, PRIVATE_VIT, PRIVATE_IMAGES)[1]["data"]

    # Her reads left the private gallery, model and dataset in the server's memory and Hub caches: other visitors
    # still get nothing of them, whether with a token of their own (bob's) or none.
    assert_reads_nothing_private(visitor(space, BOB_TOKEN), space)
    assert_reads_nothing_private(visitor(space), space)


def test_off_a_space_the_local_users_token_reads_the_private_gallery(space, monkeypatch):
    monkeypatch.delenv("SYSTEM")  # the same server, run by alice on her own machine (HF_TOKEN is her login)
    assert not common.on_space()
    source, *_ = visitor(space).predict(PRIVATE_GALLERY, api_name="/open_gallery")
    assert source == PRIVATE_GALLERY
    assert len(examples(visitor(space), PRIVATE_VIT, PRIVATE_IMAGES)) == 4


@pytest.mark.parametrize("builder", ["imagefolder", "csv", "parquet", "ImageFolder", "webdataset", "sql"])
def test_on_a_space_datasets_builders_are_refused_and_nothing_is_read(space, monkeypatch, builder):
    reads = []
    for name in ("load_dataset", "load_dataset_builder", "get_dataset_split_names"):
        monkeypatch.setattr(datasets, name, lambda *args, _name=name, **kwargs: reads.append(_name))
    anonymous = visitor(space)
    for call in (lambda: examples(anonymous, PUBLIC_VIT, builder), lambda: analyze(anonymous, PUBLIC_VIT, builder)):
        message = app_error(call)
        assert message.startswith(f"'{builder}' is a builder of the datasets library, which reads this server's "
                                  "files: on this Space enter a Hub dataset id"), message
    assert reads == []


def test_on_a_space_the_built_in_datasets_still_work(space):
    plot, table, summary = analyze(visitor(space), "vit-feature-viz/shapes-vit", "vit-feature-viz/shapes-shape")
    assert table["data"] and "shapes-vit" in summary


def test_which_token_a_visitors_read_uses(monkeypatch):
    token = gr.OAuthToken(token="hf_visitor", scope="read-repos", expires_at=0)
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", SPACE_ID)
    assert visitor_token(token) == "hf_visitor"
    assert visitor_token(None) is False  # anonymous: never None, which falls back to the Space's HF_TOKEN
    assert visitor_token(gr.OAuthToken(token=" ", scope="", expires_at=0)) is False
    monkeypatch.delenv("SYSTEM")
    assert visitor_token(token) is None and visitor_token(None) is None  # off a Space: the local user's login


def test_an_sae_named_in_a_box_is_read_with_the_visitors_token_and_within_the_cap(space, tmp_path):
    """The Render tab's SAE box on a Space: alice's private gallery's SAE is not found for an anonymous visitor
    (the Space's HF_TOKEN is never used), renders a latent for alice, and a public SAE over the preset's
    max_sae_parameters is refused from the Hub's listing before its weights are downloaded."""
    from huggingface_hub import try_to_load_from_cache

    from gallery_fixtures import write_synthetic_gallery
    from vit_feature_viz.sae.model import SparseAutoencoder
    from vit_feature_viz.sae.saved import save_sae
    from vit_feature_viz.store.hub import push_gallery

    for repo, latents, private in (("alice/private-sae", 64, True), ("alice/huge-sae", 1024, False)):
        gallery = write_synthetic_gallery(tmp_path / repo.split("/")[1], layers=1, features=1)
        save_sae(SparseAutoencoder(128, latents, 4), gallery, {"model_id": PUBLIC_VIT, "layer": 1, "site": "fc1"})
        push_gallery(gallery, repo, private=private, token=space.hub.write_token)

    def render(client, sae):
        return client.predict(PUBLIC_VIT, 1, "0", "sae", "paper", 2, 32, 0, None, "", False, False, 1, sae=sae,
                              api_name="/render")

    refused(lambda: render(visitor(space), "alice/private-sae"))
    images, _ = render(visitor(space, space.hub.read_token), "alice/private-sae")
    assert "· sae(fc1 " in images[0]["caption"]
    message = app_error(lambda: render(visitor(space), "alice/huge-sae"))
    assert "too big here (weights of" in message and f"at most {SAE_CAP:,} parameters" in message
    cached = try_to_load_from_cache("alice/huge-sae", "sae/1-fc1/sae.safetensors", repo_type="dataset")
    assert not isinstance(cached, str)
