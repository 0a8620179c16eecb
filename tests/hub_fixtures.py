"""The `hub` fixture and its helpers: the real huggingface_hub and datasets clients, pointed at a loopback Hub.

huggingface_hub and datasets read HF_ENDPOINT, HF_HUB_OFFLINE, HF_HUB_DISABLE_XET and the cache paths once, at
import (huggingface_hub.constants, datasets.config), so setting the environment is not enough: the `hub`
fixture patches those module values too (monkeypatch undoes both). That also overrides conftest.py, which sets
HF_HUB_OFFLINE=1 for the rest of the suite. conftest.py imports this module after it has set that environment.

A test that needs a model from the offline test cache must load it before `hub` points the caches elsewhere
(list that fixture before `hub`).
"""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
from huggingface_hub import HfFileSystem, constants

from hub_server import LoopbackHub


# huggingface_hub's own LFS upload passes a file as `data=`, which its HTTP client deprecates: not ours to fix.
IGNORE_CLIENT_UPLOAD_WARNING = pytest.mark.filterwarnings(
    "ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")


def point_clients_at(monkeypatch, url: str | None, cache_root: Path) -> None:
    """Environment and import-time constants for huggingface_hub and datasets: online, no Xet, fresh caches."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(cache_root / "no-token"))  # never a real saved token
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(cache_root / "no-stored-tokens"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    if url is not None:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(datasets.config, "HF_ENDPOINT", url)
        monkeypatch.setattr(datasets.config, "HUB_DATASETS_URL", url + "/datasets/{repo_id}/resolve/{revision}/{path}")
    use_fresh_caches(monkeypatch, cache_root)


def use_fresh_caches(monkeypatch, root: Path) -> None:
    """Point every Hub/datasets cache at `root`, so an earlier download cannot hide what the server holds."""
    monkeypatch.setenv("HF_HOME", str(root))
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(root / "datasets"))
    monkeypatch.setattr(constants, "HF_HOME", str(root))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root / "hub"))
    monkeypatch.setattr(constants, "HF_ASSETS_CACHE", str(root / "assets"))
    monkeypatch.setattr(datasets.config, "HF_CACHE_HOME", str(root))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", root / "datasets")
    monkeypatch.setattr(datasets.config, "HF_MODULES_CACHE", root / "modules")
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", root / "datasets" / "downloads")
    monkeypatch.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", root / "datasets" / "downloads" / "extracted")
    HfFileSystem.clear_instance_cache()  # fsspec keeps listings per filesystem instance


def load_fresh(monkeypatch, tmp_path: Path, repo_id: str, name: str) -> datasets.Dataset:
    """load_dataset from the loopback with caches nobody used before."""
    use_fresh_caches(monkeypatch, tmp_path / f"load-{name}")
    return datasets.load_dataset(repo_id, split="train", cache_dir=str(tmp_path / f"load-{name}" / "datasets"))


def push_parquet_shards(hub, repo_id: str, dataset: datasets.Dataset, shards: int, folder: Path) -> list[str]:
    """Push `dataset` as the train split of a dataset repo in `shards` parquet files of equal rows (written into
    `folder` first); returns the shards' repo paths in row order. Clears `hub.reads`, so a test sees only its own."""
    from huggingface_hub import HfApi

    (folder / "data").mkdir(parents=True)
    size = len(dataset) // shards
    paths = [f"data/train-{i:05d}-of-{shards:05d}.parquet" for i in range(shards)]
    for i, path in enumerate(paths):
        dataset.select(range(i * size, (i + 1) * size)).to_parquet(str(folder / path))
    api = HfApi(endpoint=hub.url, token=hub.write_token)
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(folder))
    hub.reads.clear()
    return paths


def parquet_reads(hub, repo_id: str) -> list[str]:
    """The parquet files of `repo_id` whose bytes were asked for, in order, once each."""
    return list(dict.fromkeys(path for repo, path, _ in hub.reads if repo == repo_id and path.endswith(".parquet")))


def assert_error_without_token(excinfo, *needles: str, token: str) -> None:
    """One line that names the fix, and neither it nor any chained exception quotes the token."""
    message = str(excinfo.value)
    for needle in needles:
        assert needle in message, message
    assert "\n" not in message
    chain, exc = [], excinfo.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    assert token not in " ".join(chain)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A LoopbackHub (user alice) that huggingface_hub and datasets talk to, online, with fresh caches."""
    with LoopbackHub() as server:
        point_clients_at(monkeypatch, server.url, tmp_path / "hf-home")
        yield server
    HfFileSystem.clear_instance_cache()
