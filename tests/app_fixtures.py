"""The app served on a free loopback port for gradio_client tests, and helpers shared by the app's test files.

Tiny random checkpoints come from the offline test cache (conftest.py); the app runs with a tiny hardware preset
set through the environment, so the caps are small enough to cross in a test.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from PIL import Image  # noqa: E402

from helpers import free_port  # noqa: E402

CAPS = {  # a tiny preset, chosen by env exactly as a Space owner would
    "VFV_HARDWARE": "cpu-basic",
    "VFV_MAX_STEPS": "5",
    "VFV_MAX_FEATURES": "3",
    "VFV_MAX_IMAGE_SIZE": "48",
    "VFV_MAX_SCAN_IMAGES": "20",
    "VFV_MAX_TOP_K": "4",
    "VFV_MAX_PARAMETERS": "10000000",
    "VFV_MAX_GALLERY_ROWS": "1000",
    "VFV_MAX_SAE_IMAGES": "24",
}


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


def no_progress(*args, **kwargs):
    pass
