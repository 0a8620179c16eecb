"""The visitor's session gallery: download, and push with the real huggingface_hub client to the loopback Hub
(tests/hub_server.py), always with the visitor's own token."""

from __future__ import annotations

import zipfile
from types import SimpleNamespace

import gradio as gr
import pytest

from app_fixtures import app_error, no_progress, render
from hub_fixtures import IGNORE_CLIENT_UPLOAD_WARNING, assert_error_without_token, load_fresh
from vit_feature_viz.app import common
from vit_feature_viz.app.common import ModelCache
from vit_feature_viz.app.render_tab import Renderer
from vit_feature_viz.app.sharing_tab import Sharing

pytestmark = [pytest.mark.slow, IGNORE_CLIENT_UPLOAD_WARNING]


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


def test_rendered_rows_carry_their_patch_map_like_the_clis(session):
    rows = session_rows(session.folder)
    assert [r["feature"] for r in rows] == [0, 1]
    for row in rows:
        assert row["image_patch_map"] is not None and row["image_patch_map"].size == row["image"].size


def test_a_symbolic_link_in_the_session_gallery_is_never_pushed_or_downloaded(session, hub, monkeypatch, tmp_path):
    from pathlib import Path

    off_a_space(monkeypatch, server_token=None)
    secret = tmp_path / "server-secret.csv"
    secret.write_text("hf_secret_of_the_server\n")
    folder = Path(session.folder)
    (folder / "analysis" / "token_pooling").mkdir(parents=True)
    (folder / "analysis" / "token_pooling" / "run.csv").symlink_to(secret)

    with pytest.raises(gr.Error) as excinfo:
        session.logic.push("alice/gallery", False, hub.write_token, session.folder)
    message = str(excinfo.value)
    assert "analysis/token_pooling/run.csv is a symbolic link" in message and "your gallery is unchanged" in message
    assert str(folder) not in message and "\n" not in message
    assert hub.repos == {} and hub.uploads == []
    with pytest.raises(gr.Error, match="analysis/token_pooling/run.csv is a symbolic link in your gallery"):
        session.logic.download("zip", session.folder)
    parquet = session.logic.download("parquet", session.folder)  # the shards alone hold no link
    assert b"hf_secret" not in Path(parquet).read_bytes()

    shard = next((folder / "data").glob("*.parquet"))
    (folder / "data" / "train-linked.parquet").symlink_to(shard)
    with pytest.raises(gr.Error, match="data/train-linked.parquet is a symbolic link in your gallery"):
        session.logic.download("parquet", session.folder)


def test_download_of_an_empty_gallery_is_a_clear_error(session):
    with pytest.raises(gr.Error, match="Your gallery is empty"):
        session.logic.download("parquet", None)


# --- pushing the session gallery, with the real huggingface_hub client, to the loopback Hub (tests/hub_server.py)


def session_rows(folder) -> list[dict]:
    from vit_feature_viz.store.folder import GalleryFolder

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


def off_a_space(monkeypatch, server_token: str | None, *, opt_in: bool = False) -> None:
    """A server run locally or on a machine of its own, with its owner's token in HF_TOKEN."""
    monkeypatch.delenv("SYSTEM", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    if server_token:
        monkeypatch.setenv("HF_TOKEN", server_token)
    if opt_in:
        monkeypatch.setenv("VFV_PUSH_WITH_SERVER_TOKEN", "1")
    else:
        monkeypatch.delenv("VFV_PUSH_WITH_SERVER_TOKEN", raising=False)
    assert not common.on_space()


def test_off_a_space_the_servers_token_is_never_used_unless_its_owner_opts_in(session, hub, monkeypatch):
    off_a_space(monkeypatch, server_token=hub.write_token)  # a usable token: a fallback to it would push
    with pytest.raises(gr.Error, match="Paste a Hugging Face token with write access in the Token field"):
        session.logic.push("alice/gallery", False, None, session.folder)
    with pytest.raises(gr.Error, match="VFV_PUSH_WITH_SERVER_TOKEN=1"):  # blank is no token
        session.logic.push("alice/gallery", False, "  ", session.folder)
    oauth = visitor(hub.write_token)  # off a Space gradio's sign-in hands out the server's own token
    with pytest.raises(gr.Error, match="Token field"):
        session.logic.push("alice/gallery", False, None, session.folder, *oauth)
    assert hub.commits == []


def test_off_a_space_the_visitors_token_is_used(session, hub, monkeypatch, tmp_path):
    off_a_space(monkeypatch, server_token="hf_server_owner_secret")  # unknown to the Hub: using it would fail
    message = session.logic.push("alice/my-gallery", True, hub.write_token, session.folder)
    assert "Pushed 2 feature(s)" in message and f"{hub.url}/datasets/alice/my-gallery" in message
    assert "README.md" in hub.files("alice/my-gallery")
    assert hub.repos[("dataset", "alice/my-gallery")].private
    assert_hub_holds_the_session(monkeypatch, tmp_path, "alice/my-gallery", session.folder, "local",
                                 token=hub.read_token)


def test_the_server_token_with_the_owners_opt_in(session, hub, monkeypatch):
    off_a_space(monkeypatch, server_token=hub.write_token, opt_in=True)
    assert "Pushed 2 feature(s)" in session.logic.push("alice/owned", False, None, session.folder)
    on_a_space(monkeypatch, space_secret=hub.write_token)  # never on a Space, whatever the env says
    monkeypatch.setenv("VFV_PUSH_WITH_SERVER_TOKEN", "1")
    with pytest.raises(gr.Error, match="Sign in with Hugging Face"):
        session.logic.push("alice/owned", False, None, session.folder)
    assert [c.repo_id for c in hub.commits] == ["alice/owned"]


def test_space_push_needs_sign_in_and_goes_to_the_visitors_namespace(session, hub, monkeypatch, tmp_path):
    on_a_space(monkeypatch, space_secret=hub.write_token)  # a usable secret: a fallback to it would push
    with pytest.raises(gr.Error, match="Sign in with Hugging Face"):
        session.logic.push("gallery", False, None, session.folder, None, None)
    assert hub.commits == []

    on_a_space(monkeypatch, space_secret="hf_space_owner_secret")  # unknown to the Hub: using it would fail
    token, profile = visitor(hub.write_token)
    with pytest.raises(gr.Error, match="only into your own namespace: use alice/gallery"):
        session.logic.push("someone-else/gallery", False, None, session.folder, token, profile)
    assert hub.commits == []

    assert "Pushed 2 feature(s)" in session.logic.push("gallery", False, None, session.folder, token, profile)
    assert "Pushed 2 feature(s)" in session.logic.push("alice/other", False, "", session.folder, token, profile)
    assert "Pushed 2 feature(s)" in session.logic.push("alice/pasted", False, hub.write_token, session.folder)
    assert {c.repo_id for c in hub.commits} == {"alice/gallery", "alice/other", "alice/pasted"}
    assert_hub_holds_the_session(monkeypatch, tmp_path, "alice/gallery", session.folder, "space")


@pytest.mark.parametrize("where", ["local", "space", "pasted"])
def test_push_with_a_wrong_token_is_one_line_without_the_token(session, hub, monkeypatch, where):
    wrong = "hf_thisIsNotAValidToken123"
    pasted, oauth = None, (None, None)
    if where == "space":
        on_a_space(monkeypatch, space_secret=hub.write_token)
        oauth = visitor(wrong)
    elif where == "local":
        off_a_space(monkeypatch, server_token=wrong, opt_in=True)
    else:  # a wrong pasted token is used as is: no fallback to the server's valid one
        off_a_space(monkeypatch, server_token=hub.write_token, opt_in=True)
        pasted = wrong
    with pytest.raises(gr.Error) as excinfo:
        session.logic.push("alice/gallery", False, pasted, session.folder, *oauth)
    assert_error_without_token(excinfo, "rejected the request as unauthenticated (401)", "Token field",
                               "your gallery", token=wrong)
    assert "hf auth login" not in str(excinfo.value)  # the app's control, not the CLI's advice
    assert str(session.folder) not in str(excinfo.value)  # the server's folder is none of the visitor's business
    assert hub.commits == []


def test_gradio_injects_the_oauth_arguments_of_push():
    """gradio fills gr.OAuthToken / gr.OAuthProfile parameters from the session (None when signed out)."""
    from gradio.helpers import special_args

    inputs, *_ = special_args(Sharing.push, inputs=["name", False, "hf_x", "/tmp/x"], request=None)
    assert inputs == ["name", False, "hf_x", "/tmp/x", None, None]


@pytest.fixture
def rendered(client, vit):
    """The API client's session holds two rendered features (rendered before `hub` moves the model caches)."""
    render(client, vit, 1, "0,1", steps=2)
    return client


def test_push_through_the_api_with_the_visitors_token(rendered, hub, monkeypatch):
    off_a_space(monkeypatch, server_token=hub.write_token)
    assert "Token field" in app_error(lambda: rendered.predict("alice/api", False, "", api_name="/push"))
    assert hub.commits == []
    message = rendered.predict("alice/api", False, hub.write_token, api_name="/push")
    assert message.startswith("Pushed 2 feature(s)") and hub.write_token not in message
    assert [c.repo_id for c in hub.commits] == ["alice/api"]
