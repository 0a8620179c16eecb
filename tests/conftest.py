"""Hermetic, offline Hugging Face environment for the whole test session.

The environment is set at import time, before any test module imports
huggingface_hub/transformers, because those read their cache paths and offline
flag once at import. Subprocesses (CLI tests) inherit it, and find the repo
names in ``VFV_TEST_REPOS``.
"""

import atexit
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
)
if "huggingface_hub" in sys.modules:  # a plugin got there first: the settings above would be ignored
    raise RuntimeError("huggingface_hub was imported before tests/conftest.py set HF_HUB_CACHE/HF_HUB_OFFLINE")

sys.path.insert(0, str(Path(__file__).parent))
from tiny_checkpoints import build_hub_cache  # noqa: E402

TINY_REPOS = build_hub_cache(HUB_CACHE)
os.environ["VFV_TEST_REPOS"] = json.dumps(TINY_REPOS)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_repos() -> dict[str, str]:
    """Role -> repo id of the tiny checkpoints (see tests/tiny_checkpoints.py)."""
    return dict(TINY_REPOS)


@pytest.fixture(scope="session")
def hub_cache_dir() -> Path:
    """The session's Hugging Face Hub cache (HF_HUB_CACHE)."""
    return HUB_CACHE


# The loopback Hub and the real clients pointed at it (test_hub.py, test_app.py). Imported only now: importing
# huggingface_hub/datasets must come after the environment above is set.
from hub_fixtures import hub  # noqa: E402,F401
