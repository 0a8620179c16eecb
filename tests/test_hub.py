"""push_gallery / pull_gallery against a loopback Hub, with the real huggingface_hub and datasets clients.

The `hub` fixture and the helpers that point the clients at the loopback are in hub_fixtures.py (via conftest.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi, HfFileSystem, constants, hf_hub_download
from huggingface_hub.errors import RemoteEntryNotFoundError
from PIL import Image

import helpers
from helpers import snapshot
from hub_fixtures import IGNORE_CLIENT_UPLOAD_WARNING, assert_error_without_token, load_fresh, point_clients_at
from hub_server import LoopbackHub, closed_port_url
from vit_feature_viz.errors import VizError
from vit_feature_viz.store.folder import GalleryFolder
from vit_feature_viz.store.hub import pull_gallery, push_gallery
from vit_feature_viz.store.schema import FEATURES

pytestmark = IGNORE_CLIENT_UPLOAD_WARNING


# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def gallery(tmp_path) -> Path:
    """A gallery folder with one shard, plus local-only files a push must skip."""
    folder = tmp_path / "gallery"
    write_gallery(folder)
    (folder / ".gallery.lock").write_text("pid 1\n")
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "note.txt").write_text("local metadata\n")
    return folder


def write_gallery(folder: Path, shard: int = 0, rows: int = 3) -> Path:
    """Write data/train-<shard>.parquet (gallery rows with small images) and refresh the gallery's card."""
    rng = np.random.default_rng(shard)
    table = {name: [[] if isinstance(feature, datasets.List) else None] * rows for name, feature in FEATURES.items()}
    table.update(
        image=[Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(rows)],
        model_id=["google/vit-base-patch16-224"] * rows,
        layer=[shard] * rows,
        feature=[shard * 100 + i for i in range(rows)],
        objective=["feature"] * rows,
        activation=[float(i) + 0.5 for i in range(rows)],
    )
    (folder / "data").mkdir(parents=True, exist_ok=True)
    shard_path = folder / "data" / f"train-{shard:04d}.parquet"
    datasets.Dataset.from_dict(table, features=FEATURES).to_parquet(str(shard_path))
    GalleryFolder(folder).write_card({"backend": "transformers"})
    return shard_path


# -------------------------------------------------------------------------------------------------- helpers


def local_rows(folder: Path) -> list[tuple]:
    """Rows of the gallery's parquet shards in name order, image as its stored bytes."""
    rows = []
    for shard in sorted((folder / "data").glob("*.parquet")):
        for row in pq.read_table(shard).to_pylist():
            rows.append((row["image"]["bytes"], row["model_id"], row["layer"], row["feature"], row["activation"]))
    return rows


def hub_rows(loaded: datasets.Dataset) -> list[tuple]:
    raw = loaded.cast_column("image", datasets.Image(decode=False))
    return [(r["image"]["bytes"], r["model_id"], r["layer"], r["feature"], r["activation"]) for r in raw]


# ---------------------------------------------------------------------------------------------------- tests


def test_push_then_load_dataset_gives_same_rows_and_image_bytes(hub, gallery, monkeypatch, tmp_path):
    before = snapshot(gallery)

    url = push_gallery(gallery, "alice/vit-gallery", token=hub.write_token)

    assert url == f"{hub.url}/datasets/alice/vit-gallery"
    assert snapshot(gallery) == before
    remote = hub.files("alice/vit-gallery")
    assert set(remote) == {".gitattributes", "README.md", "data/train-0000.parquet"}  # no lock, no .cache
    assert remote["data/train-0000.parquet"] == before["data/train-0000.parquet"]
    assert len(hub.commits) == 1

    loaded = load_fresh(monkeypatch, tmp_path, "alice/vit-gallery", "first")
    assert hub_rows(loaded) == local_rows(gallery)
    pixels = np.asarray(Image.open(io.BytesIO(local_rows(gallery)[0][0])))
    assert np.array_equal(np.asarray(loaded[0]["image"]), pixels)


def test_push_uploads_only_the_card_and_the_shards(hub, gallery, monkeypatch, tmp_path):
    strays = ["credentials.txt", "notes/model.parquet", "data/notes.txt", "data/.hidden.parquet", "data/x.parquet.tmp",
              "README.md.bak", ".env"]
    for stray in strays:
        (gallery / stray).parent.mkdir(parents=True, exist_ok=True)
        (gallery / stray).write_text("hf_secret_do_not_upload\n")

    push_gallery(gallery, "alice/vit-gallery", token=hub.write_token)

    assert sorted(hub.uploaded_paths()) == ["README.md", "data/train-0000.parquet"]
    assert set(hub.files("alice/vit-gallery")) == {".gitattributes", "README.md", "data/train-0000.parquet"}
    assert all(b"hf_secret" not in content for content in hub.files("alice/vit-gallery").values())


def test_pushed_card_names_the_repo_and_declares_image_features(hub, gallery, monkeypatch, tmp_path):
    from huggingface_hub import DatasetCard

    local_card = (gallery / "README.md").read_text()
    assert 'load_dataset("path/to/this/folder"' in local_card
    (gallery / ".gallery.lock").unlink()
    before = snapshot(gallery)

    push_gallery(gallery, "alice/vit-gallery", token=hub.write_token)

    assert snapshot(gallery) == before  # the local folder is only read: not even a lock file appears
    card = DatasetCard(hub.files("alice/vit-gallery")["README.md"].decode())
    assert 'load_dataset("alice/vit-gallery", split="train")' in card.text
    assert "path/to/this/folder" not in card.text
    assert card.data.license == "other" and card.data.license_name and card.data.license_link == "README.md"
    assert card.data.task_categories == ["image-feature-extraction"]
    declared = datasets.Features._from_yaml_list(card.data.dataset_info["features"])
    assert declared == FEATURES and isinstance(declared["image"], datasets.Image)
    loaded = load_fresh(monkeypatch, tmp_path, "alice/vit-gallery", "card")
    assert loaded.features == FEATURES  # what the viewer and load_dataset use: image columns are images


def test_second_push_uploads_only_the_new_shard_and_the_card(hub, gallery, monkeypatch, tmp_path):
    push_gallery(gallery, "alice/vit-gallery", token=hub.write_token)
    first_shard = (gallery / "data" / "train-0000.parquet").read_bytes()
    hub.uploads.clear()

    write_gallery(gallery, shard=1)  # a new shard; the card now counts its rows
    push_gallery(gallery, "alice/vit-gallery", token=hub.write_token)

    assert sorted(hub.uploaded_paths()) == ["README.md", "data/train-0001.parquet"]
    assert sorted(hub.commits[-1].operations) == [("file", "README.md"), ("lfsFile", "data/train-0001.parquet")]
    remote = hub.files("alice/vit-gallery")
    assert remote["data/train-0000.parquet"] == first_shard
    loaded = load_fresh(monkeypatch, tmp_path, "alice/vit-gallery", "second")
    assert len(loaded) == 6
    assert hub_rows(loaded) == local_rows(gallery)

    commits = len(hub.commits)
    push_gallery(gallery, "alice/vit-gallery", token=hub.write_token)  # nothing changed: no commit at all
    assert len(hub.commits) == commits


def test_push_uploads_a_changed_shard_and_keeps_remote_only_files(hub, gallery, tmp_path):
    push_gallery(gallery, "alice/vit-gallery", token=hub.write_token)
    write_gallery(tmp_path / "other", shard=2)
    (gallery / "data" / "train-0000.parquet").write_bytes((tmp_path / "other/data/train-0002.parquet").read_bytes())
    GalleryFolder(gallery).write_card()
    hub.uploads.clear()

    push_gallery(gallery, "alice/vit-gallery", token=hub.write_token, commit_message="Replace shard 0")

    assert sorted(hub.uploaded_paths()) == ["README.md", "data/train-0000.parquet"]
    assert hub.commits[-1].summary == "Replace shard 0"
    assert hub.files("alice/vit-gallery")["data/train-0000.parquet"] == (gallery / "data/train-0000.parquet").read_bytes()

    (gallery / "data" / "train-0000.parquet").rename(gallery / "data" / "train-0009.parquet")
    push_gallery(gallery, "alice/vit-gallery", token=hub.write_token)
    assert "data/train-0000.parquet" in hub.files("alice/vit-gallery")  # never deleted remotely


def test_pull_gallery_gives_the_same_files_and_pushes_back_nothing(hub, gallery, tmp_path):
    (gallery / "analysis" / "token_pooling").mkdir(parents=True)
    (gallery / "analysis" / "token_pooling" / "run.csv").write_text("layer,accuracy\n0,0.5\n")
    push_gallery(gallery, "alice/vit-gallery", token=hub.write_token)
    write_gallery(gallery, shard=1)
    push_gallery(gallery, "alice/vit-gallery", token=hub.write_token)

    pulled = pull_gallery("alice/vit-gallery", tmp_path / "pulled", token=hub.read_token)

    assert pulled == tmp_path / "pulled"
    remote = {p: b for p, b in hub.files("alice/vit-gallery").items() if not p.startswith(".")}
    got = {p: b for p, b in snapshot(pulled).items() if not p.startswith(".")}
    assert got == remote
    assert {p: b for p, b in got.items() if p.startswith("data/")} == \
        {p: b for p, b in snapshot(gallery).items() if p.startswith("data/")}
    assert "analysis/token_pooling/run.csv" in got
    commits, uploads = len(hub.commits), len(hub.uploads)
    push_gallery(pulled, "alice/vit-gallery", token=hub.write_token)  # .cache and .gitattributes stay local
    assert (len(hub.commits), len(hub.uploads)) == (commits, uploads)


def test_pull_refuses_a_destination_it_would_damage(hub, gallery, tmp_path):
    push_gallery(gallery, "alice/vit-gallery", token=hub.write_token)
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("my project\n")
    (project / "notes.txt").write_text("keep me\n")
    afile = tmp_path / "afile.txt"
    afile.write_text("not a folder\n")

    with pytest.raises(VizError, match="is not empty and not a gallery .*pull into a new or empty folder"):
        pull_gallery("alice/vit-gallery", project)
    with pytest.raises(VizError, match="is a file: pull into a new or empty folder"):
        pull_gallery("alice/vit-gallery", afile)
    assert (project / "README.md").read_text() == "my project\n" and afile.read_text() == "not a folder\n"
    assert sorted(p.name for p in project.iterdir()) == ["README.md", "notes.txt"]

    (tmp_path / "empty").mkdir()
    assert (pull_gallery("alice/vit-gallery", tmp_path / "empty") / "README.md").is_file()
    write_gallery(tmp_path / "mine", shard=3)  # an existing gallery: pulling adds the remote's files
    pull_gallery("alice/vit-gallery", tmp_path / "mine")
    assert sorted(p.name for p in (tmp_path / "mine" / "data").glob("*.parquet")) == \
        ["train-0000.parquet", "train-0003.parquet"]


def test_pull_an_old_revision(hub, gallery, tmp_path):
    push_gallery(gallery, "alice/vit-gallery", token=hub.write_token)
    first = hub.commits[-1].sha
    write_gallery(gallery, shard=1)
    push_gallery(gallery, "alice/vit-gallery", token=hub.write_token)

    pulled = pull_gallery("alice/vit-gallery", tmp_path / "old", revision=first)

    assert sorted(p.name for p in (pulled / "data").glob("*.parquet")) == ["train-0000.parquet"]


def test_token_from_hf_token_env(hub, gallery, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub.write_token)
    push_gallery(gallery, "alice/from-env")
    assert "README.md" in hub.files("alice/from-env")


@pytest.mark.parametrize("repo_exists", [False, True], ids=["new-repo", "existing-repo"])
@pytest.mark.parametrize("token", ["hf_wrong_token_do_not_print", None], ids=["wrong-token", "no-token"])
def test_bad_or_missing_token_is_a_vizerror(hub, gallery, token, repo_exists):
    if repo_exists:
        HfApi(token=hub.write_token).create_repo("alice/vit-gallery", repo_type="dataset")
    before = snapshot(gallery)
    with pytest.raises(VizError) as excinfo:
        push_gallery(gallery, "alice/vit-gallery", token=token)
    assert_error_without_token(excinfo, "log in with `hf auth login` or set HF_TOKEN to a write token",
                                  str(gallery), token=token or hub.write_token)
    assert snapshot(gallery) == before
    assert hub.commits == []


def test_pull_with_a_wrong_token_is_a_vizerror(hub, gallery, tmp_path):
    push_gallery(gallery, "alice/vit-gallery", token=hub.write_token)
    with pytest.raises(VizError) as excinfo:
        pull_gallery("alice/vit-gallery", tmp_path / "pulled", token="hf_wrong_token_do_not_print")
    assert_error_without_token(excinfo, "hf auth login", token="hf_wrong_token_do_not_print")


def test_read_only_token_cannot_push(hub, gallery):
    before = snapshot(gallery)
    with pytest.raises(VizError) as excinfo:
        push_gallery(gallery, "alice/vit-gallery", token=hub.read_token)
    assert_error_without_token(excinfo, "cannot write to alice/vit-gallery", "write access", token=hub.read_token)
    assert snapshot(gallery) == before


def test_another_namespace_cannot_be_written(hub, gallery):
    before = snapshot(gallery)
    with pytest.raises(VizError) as excinfo:
        push_gallery(gallery, "bob/vit-gallery", token=hub.write_token)
    assert_error_without_token(excinfo, "cannot write to bob/vit-gallery", token=hub.write_token)
    assert snapshot(gallery) == before


def test_unreachable_hub_is_a_vizerror_naming_the_endpoint(monkeypatch, gallery, tmp_path):
    before = snapshot(gallery)
    with LoopbackHub() as server:
        point_clients_at(monkeypatch, server.url, tmp_path / "hf-home")
        push_gallery(gallery, "alice/vit-gallery", token=server.write_token)  # warm the client's connections
        write_gallery(gallery, shard=1)
        before = snapshot(gallery)
    for endpoint in (server.url, closed_port_url()):  # a server that went away, a port nobody listens on
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        with pytest.raises(VizError) as excinfo:
            push_gallery(gallery, "alice/vit-gallery", token=server.write_token)
        assert_error_without_token(excinfo, f"cannot reach the Hub at {endpoint}", "HF_ENDPOINT",
                                      f"the local gallery in {gallery} is unchanged", token=server.write_token)
        assert snapshot(gallery) == before
        with pytest.raises(VizError, match="cannot reach the Hub"):
            pull_gallery("alice/vit-gallery", tmp_path / "pulled")


def test_offline_mode_is_a_vizerror(hub, gallery, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(VizError, match="HF_HUB_OFFLINE"):
        push_gallery(gallery, "alice/vit-gallery", token=hub.write_token)


def test_pull_errors(hub, gallery, tmp_path):
    with pytest.raises(VizError, match="dataset repo alice/missing not found"):
        pull_gallery("alice/missing", tmp_path / "missing")
    assert not (tmp_path / "missing").exists()

    HfApi(token=hub.write_token).create_repo("alice/not-a-gallery", repo_type="dataset")
    with pytest.raises(VizError, match="not a gallery"):
        pull_gallery("alice/not-a-gallery", tmp_path / "not")

    push_gallery(gallery, "alice/private", private=True, token=hub.write_token)
    with pytest.raises(VizError, match="not found"):
        pull_gallery("alice/private", tmp_path / "private")  # no token: hidden, like the Hub does
    assert pull_gallery("alice/private", tmp_path / "private", token=hub.read_token).is_dir()

    with pytest.raises(VizError, match="revision 'nope' not found"):
        pull_gallery("alice/private", tmp_path / "rev", revision="nope", token=hub.read_token)


def test_push_rejects_a_folder_that_is_not_a_gallery(hub, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("# not a gallery\n")
    with pytest.raises(VizError, match="not a gallery folder"):
        push_gallery(tmp_path / "empty", "alice/vit-gallery", token=hub.write_token)
    with pytest.raises(VizError, match="does not exist"):
        push_gallery(tmp_path / "nowhere", "alice/vit-gallery", token=hub.write_token)
    with pytest.raises(VizError, match="invalid repo id"):
        write_gallery(tmp_path / "ok")
        push_gallery(tmp_path / "ok", "alice/bad//id", token=hub.write_token)
    assert hub.commits == []


def test_datasets_push_to_hub_works_against_the_loopback(hub, monkeypatch, tmp_path):
    write_gallery(tmp_path / "src")
    source = datasets.Dataset.from_parquet(str(tmp_path / "src" / "data" / "train-0000.parquet"))

    source.push_to_hub("alice/pushed-by-datasets", token=hub.write_token)

    assert any(p.startswith("data/") and p.endswith(".parquet") for p in hub.uploaded_paths())
    loaded = load_fresh(monkeypatch, tmp_path, "alice/pushed-by-datasets", "pushed")
    assert hub_rows(loaded) == local_rows(tmp_path / "src")


def test_huggingface_hub_clients_work_against_the_loopback(hub, gallery, tmp_path):
    api = HfApi(token=hub.write_token)
    api.create_repo("alice/by-hand", repo_type="dataset")
    local_only = [".*", ".*/**"]
    api.upload_folder(repo_id="alice/by-hand", repo_type="dataset", folder_path=gallery, ignore_patterns=local_only)
    shard = (gallery / "data" / "train-0000.parquet").read_bytes()

    readme = hf_hub_download("alice/by-hand", "README.md", repo_type="dataset", cache_dir=tmp_path / "dl")
    assert Path(readme).read_text() == (gallery / "README.md").read_text()
    (info,) = api.get_paths_info("alice/by-hand", ["data/train-0000.parquet"], repo_type="dataset")
    assert info.lfs.sha256 == hashlib.sha256(shard).hexdigest()
    tree = {e.path for e in api.list_repo_tree("alice/by-hand", repo_type="dataset", recursive=True)}
    assert tree == {".gitattributes", "README.md", "data", "data/train-0000.parquet"}
    with HfFileSystem(token=hub.write_token).open("datasets/alice/by-hand/data/train-0000.parquet", "rb") as f:
        f.seek(100)
        assert f.read(50) == shard[100:150]  # a ranged read
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("alice/by-hand", "missing.txt", repo_type="dataset", cache_dir=tmp_path / "dl")


# ------------------------------------------------------------------------ the CLI, on a real rendered gallery


@pytest.fixture(scope="module")
def rendered_gallery(tiny_repos, tmp_path_factory) -> Path:
    """A gallery made by the renderer (module scope: built from the offline model cache before `hub` swaps it)."""
    from vit_feature_viz import jobs, load_model

    folder = tmp_path_factory.mktemp("rendered") / "gallery"
    jobs.render_to_folder(load_model(tiny_repos["vit"], device="cpu"), folder, 1, "0-2", steps=2, progress=False)
    return folder


def run_cli(*args, token: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_TOKEN=token)  # `hub` already pointed the environment at the loopback
    return helpers.run_cli(*args, env=env, check=False)


def test_cli_push_then_anyone_loads_it_and_pull_brings_it_back(hub, rendered_gallery, monkeypatch, tmp_path, capsys):
    from vit_feature_viz.cli import main
    from vit_feature_viz.store.folder import GalleryFolder

    before = snapshot(rendered_gallery)
    pushed = run_cli("push", rendered_gallery, "alice/vit-gallery", "--commit-message", "first layer", token=hub.write_token)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip().endswith("/datasets/alice/vit-gallery")
    assert snapshot(rendered_gallery) == before

    local = sorted(GalleryFolder(rendered_gallery).rows(), key=lambda r: r["feature"])
    loaded = sorted(load_fresh(monkeypatch, tmp_path, "alice/vit-gallery", "cli"), key=lambda r: r["feature"])
    assert [r["feature"] for r in loaded] == [0, 1, 2]
    for mine, theirs in zip(local, loaded):
        assert np.array_equal(np.asarray(mine["image"]), np.asarray(theirs["image"]))
        assert theirs["activation"] == pytest.approx(mine["activation"]) and theirs["model_id"] == "tiny-org/vit-classifier"

    pulled = tmp_path / "pulled"
    result = run_cli("pull", "alice/vit-gallery", pulled, token=hub.read_token)
    assert result.returncode == 0, result.stderr
    def visible(files):
        return {k: v for k, v in files.items() if not k.startswith(".")}  # lock files and caches stay local

    shards = {k: v for k, v in snapshot(rendered_gallery).items() if k.startswith("data/")}
    assert visible(snapshot(pulled)) == {**shards, "README.md": hub.files("alice/vit-gallery")["README.md"]}
    assert 'load_dataset("alice/vit-gallery", split="train")' in (pulled / "README.md").read_text()

    # the refusal through main() here (push and pull ran as processes; `hub` points this one at the loopback too)
    monkeypatch.setenv("HF_TOKEN", hub.read_token)
    capsys.readouterr()
    assert main(["pull", "alice/vit-gallery", str(pulled / "README.md")]) == 2
    into_file = capsys.readouterr().err
    assert into_file.count("\n") == 1 and into_file.startswith("error:") and "is a file" in into_file, into_file


def test_cli_push_with_a_wrong_token_is_one_line_and_never_shows_the_token(hub, rendered_gallery):
    before = snapshot(rendered_gallery)
    result = run_cli("push", rendered_gallery, "alice/vit-gallery", token="hf_thisIsNotAValidToken123")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error:") and "hf auth login" in line and "hf_thisIsNotAValidToken123" not in line
    assert snapshot(rendered_gallery) == before


# ------------------------------------------------- what a push sends and where, what a pull writes (issue 16)


def link_into(gallery: Path, outside: Path, kind: str) -> str:
    """Put a symbolic link of `kind` into the gallery, pointing at `outside` (a folder holding a secret and a
    gallery shard of its own); return the path the refusal must name."""
    if kind == "analysis file":
        (gallery / "analysis" / "token_pooling").mkdir(parents=True)
        (gallery / "analysis" / "token_pooling" / "run.csv").symlink_to(outside / "secret.csv")
        return "analysis/token_pooling/run.csv is a symbolic link"
    if kind == "analysis folder":
        (gallery / "analysis").mkdir()
        (gallery / "analysis" / "leak").symlink_to(outside)
        return "analysis/leak is a symbolic link (it holds analysis/leak/secret.csv)"
    if kind == "shard":
        (gallery / "data" / "train-0009.parquet").symlink_to(outside / "data" / "train-0005.parquet")
        return "data/train-0009.parquet is a symbolic link"
    if kind == "card":
        (outside / "README.md").write_bytes((gallery / "README.md").read_bytes())
        (gallery / "README.md").unlink()
        (gallery / "README.md").symlink_to(outside / "README.md")
        return "README.md is a symbolic link"
    (gallery / "data").rename(outside / "moved-data")
    (gallery / "data").symlink_to(outside / "moved-data")
    return "data is a symbolic link (it holds data/train-0000.parquet)"


@pytest.mark.parametrize("kind", ["analysis file", "analysis folder", "shard", "card", "data folder"])
def test_push_refuses_a_symbolic_link_and_sends_nothing(hub, gallery, tmp_path, kind):
    outside = tmp_path / "server-files"
    write_gallery(outside, shard=5)  # a readable shard: only the link gives it away
    (outside / "secret.csv").write_text("hf_secret_of_the_server\n")
    named = link_into(gallery, outside, kind)
    before = snapshot(gallery)

    with pytest.raises(VizError) as excinfo:
        push_gallery(gallery, "alice/vit-gallery", token=hub.write_token)

    message = str(excinfo.value)
    assert named in message and "nothing was uploaded" in message and "\n" not in message, message
    assert hub.repos == {} and hub.uploads == []  # refused before the Hub is asked anything
    assert snapshot(gallery) == before


def test_push_of_a_gallery_with_a_corrupt_shard_creates_no_repo(hub, gallery):
    (gallery / "data" / "train-0001.parquet").write_bytes((gallery / "data" / "train-0000.parquet").read_bytes()[:500])
    with pytest.raises(VizError, match="train-0001.parquet is not a readable parquet file"):
        push_gallery(gallery, "alice/vit-gallery", token=hub.write_token)
    assert hub.repos == {} and hub.uploads == []


def test_push_never_takes_over_a_dataset_that_is_not_a_gallery(hub, gallery):
    datasets.Dataset.from_dict({"text": ["a", "b"]}).push_to_hub("alice/notes", token=hub.write_token)  # README + data/
    hub.plant("alice/card-only", {"README.md": b"# My dataset\n\nMy own notes.\n"})
    for repo in ("alice/notes", "alice/card-only"):
        before = hub.files(repo)
        with pytest.raises(VizError) as excinfo:
            push_gallery(gallery, repo, token=hub.write_token)
        assert_error_without_token(excinfo, f"the dataset repo {repo} already holds a dataset that is not a",
                                   "replace its README.md: push to another repo name, e.g. ", "-gallery",
                                   token=hub.write_token)
        assert hub.files(repo) == before
    commits = len(hub.commits)
    result = run_cli("push", gallery, "alice/notes", token=hub.write_token)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: the dataset repo alice/notes already holds a dataset")
    assert len(hub.commits) == commits

    HfApi(token=hub.write_token).create_repo("alice/empty", repo_type="dataset")  # an empty repo takes a push
    for repo in ("alice/empty", "alice/new"):
        push_gallery(gallery, repo, token=hub.write_token)
    write_gallery(gallery, shard=1)
    push_gallery(gallery, "alice/new", token=hub.write_token)  # a gallery repo takes the next push
    assert "data/train-0001.parquet" in hub.files("alice/new") and "data/train-0000.parquet" in hub.files("alice/empty")


def test_pull_refuses_an_unsafe_file_name_and_downloads_nothing(hub, gallery, tmp_path):
    push_gallery(gallery, "alice/vit-gallery", private=True, token=hub.write_token)
    hub.plant("alice/vit-gallery", {"data/../../escaped.parquet": b"PAR1 whatever"})
    mine = tmp_path / "mine"
    write_gallery(mine, shard=3)  # an existing gallery as the destination: it must stay as it is
    before, around = snapshot(mine), sorted(p.name for p in tmp_path.iterdir())
    hub.requests.clear()

    result = run_cli("pull", "alice/vit-gallery", mine, token=hub.read_token)

    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "holds a file with an unsafe name ('data/../../escaped.parquet')" in result.stderr
    assert snapshot(mine) == before and sorted(p.name for p in tmp_path.iterdir()) == around
    assert not any("/resolve/" in path for _, path, _ in hub.requests)  # not one file was downloaded
    assert not (tmp_path.parent / "escaped.parquet").exists()


def test_pull_of_a_corrupt_shard_writes_nothing_and_browsing_it_is_one_line(hub, gallery, tmp_path):
    from vit_feature_viz.store.pages import open_gallery

    push_gallery(gallery, "alice/vit-gallery", private=True, token=hub.write_token)
    good = pull_gallery("alice/vit-gallery", tmp_path / "good", token=hub.read_token)
    assert sorted(p.name for p in good.iterdir()) == ["README.md", "data"]  # no staging folder left behind
    shard = (gallery / "data" / "train-0000.parquet").read_bytes()
    hub.plant("alice/vit-gallery", {"data/train-0001.parquet": shard[:len(shard) // 2] + shard[-800:]})
    mine = tmp_path / "mine"
    write_gallery(mine, shard=3)
    before, around = snapshot(mine), sorted(p.name for p in tmp_path.iterdir())

    for destination in (mine, tmp_path / "new" / "folder"):
        with pytest.raises(VizError, match=r"alice/vit-gallery holds data/train-0001.parquet, which is not a "
                                           r"readable parquet file .*nothing was pulled"):
            pull_gallery("alice/vit-gallery", destination, token=hub.read_token)
    assert snapshot(mine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == around  # no staging folder left, "new" never made
    with pytest.raises(VizError, match="holds data/train-0001.parquet, which is not a readable parquet file .*: push "
                                       "the gallery again, or open an earlier revision"):
        open_gallery("alice/vit-gallery", token=hub.read_token)
