"""Hermetic, offline Hugging Face environment for the whole test session.

The environment is set at import time, before any test module imports
huggingface_hub/transformers, because those read their cache paths and offline
flag once at import. Subprocesses (CLI tests) inherit it, and find the repo
names in ``VFV_TEST_REPOS``.
"""

import atexit
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="vfv-tests-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
HUB_CACHE = _TMP / "hub"

for _legacy in ("HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):  # would compete with HF_HUB_CACHE
    os.environ.pop(_legacy, None)
os.environ.update(
    HF_HOME=str(_TMP / "hf_home"),
    HF_HUB_CACHE=str(HUB_CACHE),
    HF_HUB_OFFLINE="1",
    HF_HUB_DISABLE_TELEMETRY="1",
    GRADIO_ANALYTICS_ENABLED="False",
    TOKENIZERS_PARALLELISM="false",
    # the same numbers on every machine: "auto" would pick bf16 on CPUs with AMX and compare it with fp32 references
    VFV_PRECISION="fp32",
)
if "huggingface_hub" in sys.modules:  # a plugin got there first: the settings above would be ignored
    raise RuntimeError("huggingface_hub was imported before tests/conftest.py set HF_HUB_CACHE/HF_HUB_OFFLINE")

sys.path.insert(0, str(Path(__file__).parent))
from tiny_checkpoints import build_hub_cache, place_in_cache  # noqa: E402

TINY_REPOS = build_hub_cache(HUB_CACHE)
os.environ["VFV_TEST_REPOS"] = json.dumps(TINY_REPOS)

# The trained shapes fixtures shipped in the package (scripts/train_shape_fixtures.py), also placed in the cache
# under repo ids, so tests load real trained models by name through the Hub cache path. Found without importing
# the package: importing it here would import huggingface_hub early.
_PACKAGE = Path(importlib.util.find_spec("vit_feature_viz").submodule_search_locations[0])
TRAINED_SHORT_NAMES = ("shapes-color-vit-a", "shapes-color-vit-b", "shapes-shape-vit-a", "shapes-shape-vit-b")
TRAINED_PATHS = {short: _PACKAGE / "data" / "models" / short for short in TRAINED_SHORT_NAMES}
TRAINED_REPOS = {short: f"shapes-org/{short}" for short, folder in TRAINED_PATHS.items()
                 if (folder / "model.safetensors").is_file() and place_in_cache(folder, HUB_CACHE, f"shapes-org/{short}")}
os.environ["VFV_TRAINED_REPOS"] = json.dumps(TRAINED_REPOS)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_repos() -> dict[str, str]:
    """Role -> repo id of the tiny checkpoints (see tests/tiny_checkpoints.py)."""
    return dict(TINY_REPOS)


@pytest.fixture(scope="session")
def trained_repos() -> dict[str, str]:
    """Short name (shapes-shape-vit-a, ...) -> repo id of the trained shapes fixtures in the test Hub cache."""
    missing = sorted(set(TRAINED_SHORT_NAMES) - set(TRAINED_REPOS))
    if missing:
        pytest.fail(f"trained fixtures missing from vit_feature_viz/data/models: {missing} (scripts/train_shape_fixtures.py)")
    return dict(TRAINED_REPOS)


@pytest.fixture(scope="session")
def trained_paths(trained_repos) -> dict[str, Path]:
    """Short name -> package folder of the trained shapes fixtures (loadable by path)."""
    return dict(TRAINED_PATHS)


@pytest.fixture(scope="session")
def hub_cache_dir() -> Path:
    """The session's Hugging Face Hub cache (HF_HUB_CACHE)."""
    return HUB_CACHE


@pytest.fixture(scope="session")
def short_context_clips(hub_cache_dir) -> dict[str, str]:
    """Role -> repo id of the CLIPs whose text tower reads few tokens (tiny_checkpoints.SHORT_CONTEXT_REPOS), built
    once a session, on first use."""
    from tiny_checkpoints import SHORT_CONTEXT_REPOS

    return build_hub_cache(hub_cache_dir, SHORT_CONTEXT_REPOS)


# Fixtures every test file may use, without importing them: `hub` (the loopback Hub and the real clients pointed
# at it), `server`/`client`/`vit`/`image_folder` (the app served on loopback) and `browse_gallery`. pytest imports
# these modules after this one, so huggingface_hub/datasets come after the environment above is set.

@pytest.fixture(scope="module")
def shapes():
    """The built-in trained model, on one thread: its 64 px steps are too small to share between two, and a
    second thread on a busy machine made these renders 20x slower."""
    import torch

    from vit_feature_viz import load_model

    threads = torch.get_num_threads()
    model = load_model("vit-feature-viz/shapes-vit", device="cpu")
    torch.set_num_threads(1)
    yield model
    torch.set_num_threads(threads)


pytest_plugins = ["hub_fixtures", "app_fixtures", "gallery_fixtures"]
