"""`vit-feature-viz open FOLDER_OR_HUB_ID`: the app, started as a real server, with that gallery open in "Explore
galleries"; a gallery that does not open is one line and exit 2 before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gallery_fixtures import MODEL, write_synthetic_gallery
from helpers import free_port
from vit_feature_viz.cli import main

ROOT = Path(__file__).resolve().parents[1]


def on_start(url: str, config: dict) -> dict:
    """What the page-load event that opens a gallery returns, called over HTTP as a browser's page does."""
    ids = {c["props"].get("elem_id"): c["id"] for c in config["components"]}
    [load] = [d for d in config["dependencies"] if ids["gallery-summary"] in d["outputs"]
              and any(target[1] == "load" for target in d["targets"])]
    response = httpx.post(f"{url}gradio_api/run/predict", timeout=60,
                          json={"data": [], "fn_index": load["id"], "session_hash": "open-command"})
    response.raise_for_status()
    return dict(zip(load["outputs"], response.json()["data"])), ids


@pytest.mark.slow
def test_open_serves_the_app_with_the_gallery_open(tmp_path):
    folder = write_synthetic_gallery(tmp_path / "my gallery", 2, 3)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "vit_feature_viz", "open", str(folder), "--port", str(port)],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()  # printed once the server listens
        assert url == f"http://127.0.0.1:{port}/", process.stderr.read()[-2000:] if not url else url
        config = httpx.get(f"{url}config", timeout=30).json()
        outputs, ids = on_start(url, config)
        assert str(folder) in outputs[ids["gallery-summary"]] and "6 features of" in outputs[ids["gallery-summary"]]
        assert outputs[ids["gallery-source"]] == str(folder)  # the Gallery box names it
        grid = outputs[ids["layer-grid"]]
        assert [item["caption"].split(" · ")[0] for item in grid] == ["0", "1", "2"]  # its first layer, shown
        assert MODEL in str(outputs[ids["gallery-model"]])
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_open_refuses_a_gallery_that_does_not_open_before_starting(tmp_path, capfd):
    started = time.perf_counter()
    assert main(["open", str(tmp_path / "missing")]) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: Gallery folder") and "does not exist" in err and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    assert main(["open", str(tmp_path / "empty")]) == 2
    assert "is not a gallery folder" in capfd.readouterr().err
    assert main(["open", "org/not-cached-offline"]) == 2  # the suite is offline: a Hub id cannot be reached
    assert capfd.readouterr().err.startswith("error: ")
    assert time.perf_counter() - started < 10  # nothing was started (a server would have blocked here)
