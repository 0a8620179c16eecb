"""A run stopped by a real signal keeps every finished feature, and the rerun completes it to exactly the result
of an uninterrupted run (SIGTERM: one line and exit 143; SIGKILL: no chance to clean up at all). Dataset
examples and analyses save their scan's progress after every batch and resume it the same way."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from helpers import CLI, load_rows, run_cli

FEATURES, STEPS = "0-9", 15
# One torch thread: on a busy 2-core machine two threads wait on each other for every tiny op (50x slower).
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def render_args(repo: str, out: Path) -> list[str]:
    return ["render", repo, "--layer", "1", "--features", FEATURES, "--steps", str(STEPS), "--batch-size", "1",
            "--out", str(out), "--quiet"]


def saved_features(out: Path) -> list[int]:
    """What is on disk now, read the way a second process would (hidden temp files are not shards)."""
    shards = [p for p in (out / "data").glob("*.parquet") if not p.name.startswith(".")] if (out / "data").is_dir() else []
    return sorted(f for p in shards for f in pq.read_table(p, columns=["feature"]).column("feature").to_pylist())


@pytest.fixture(scope="module")
def uninterrupted(tiny_repos, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "gallery"
    run_cli(*render_args(tiny_repos["vit"], out), env=ONE_THREAD)
    return load_rows(out)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signalled_run_keeps_finished_features_and_resumes_to_the_same_result(tiny_repos, tmp_path, uninterrupted, sig):
    out = tmp_path / "gallery"
    run = subprocess.Popen([*CLI, *render_args(tiny_repos["vit"], out)], stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    deadline = time.monotonic() + 180
    while len(saved_features(out)) < 2 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(sig)
    stderr = run.communicate(timeout=120)[1]
    saved = saved_features(out)
    assert 2 <= len(saved) < 10, (saved, stderr[-2000:])
    if sig == signal.SIGTERM:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert run.returncode == 143 and "Traceback" not in stderr, stderr[-2000:]
        assert lines[-1].startswith("stopped: finished features are saved"), stderr[-2000:]
    else:
        assert run.returncode == -signal.SIGKILL

    again = run_cli(*render_args(tiny_repos["vit"], out), env=ONE_THREAD)
    assert f"rendered {10 - len(saved)} feature(s)" in again.stderr
    rows = load_rows(out)
    assert [r["feature"] for r in rows] == [r["feature"] for r in uninterrupted] == list(range(10))
    for row, whole in zip(rows, uninterrupted):
        assert np.array_equal(np.asarray(row["image"]), np.asarray(whole["image"]))
        assert row["activation"] == whole["activation"] and row["activation_init"] == whole["activation_init"]


# --- dataset examples and analyses: progress saved per batch, resumed by the same command -----------------------
SCAN_ROWS, SCAN_CAP, SCAN_BATCH = 400, 300, 2  # the cap streams the examples' dataset: its resume skips rows of a stream


@pytest.fixture(scope="module")
def labelled_parquet(tmp_path_factory):
    """A Hub-style folder (data/*.parquet) of small images labelled with the tiny classifiers' classes."""
    folder = tmp_path_factory.mktemp("scan-data")
    (folder / "data").mkdir()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)) for _ in range(SCAN_ROWS)]
    names = [f"class_{i}" for i in range(10)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    rows = datasets.Dataset.from_dict({"image": images, "label": [i % 10 for i in range(SCAN_ROWS)]}, features=features)
    rows.to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))
    return folder


def examples_args(repo: str, data: Path, out: Path) -> list[str]:
    return ["examples", repo, "--layer", "1", "--features", "0-15", "--dataset", str(data), "--max-images",
            str(SCAN_CAP), "--top-k", "4", "--scan-batch-size", str(SCAN_BATCH), "--out", str(out), "--quiet"]


def analyze_args(repo: str, data: Path, out: Path) -> list[str]:
    return ["analyze", "per-block-cls", repo, "--dataset", str(data), "--batch-size", str(SCAN_BATCH), "--device",
            "cpu", "--out", str(out), "--quiet"]


def images_done(out: Path) -> int:
    """Rows the saved progress under out/.progress says are done (0 when none is saved yet)."""
    states = list((out / ".progress").glob("*/state.pt")) if (out / ".progress").is_dir() else []
    if not states:
        return 0
    state = torch.load(states[0], weights_only=True)
    return state.get("done", state.get("seen", 0))


def killed_after_progress(args: list[str], out: Path) -> int:
    """Run the command as a real process, SIGKILL it once progress is on disk; the rows its saved progress holds."""
    run = subprocess.Popen([*CLI, *args], stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    deadline = time.monotonic() + 180
    while images_done(out) < 8 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    stderr = run.communicate(timeout=120)[1]
    assert run.returncode == -signal.SIGKILL, stderr[-2000:]
    return images_done(out)


def skipped_on_resume(stderr: str) -> int:
    found = re.findall(r"^note: Resumed a stopped (?:scan|run): the (\d+) image\(s\) it had", stderr, re.MULTILINE)
    assert len(found) == 1, stderr[-2000:]
    return int(found[0])


def uninterrupted_run(args: list[str]) -> subprocess.Popen:
    """The reference run, started at once so that it runs while the other is killed and resumed."""
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ONE_THREAD)


def finished(run: subprocess.Popen) -> str:
    stdout, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr[-2000:]
    return stdout


def test_killed_examples_resume_to_the_uninterrupted_result(tiny_repos, labelled_parquet, tmp_path):
    whole, out = tmp_path / "whole", tmp_path / "gallery"
    reference = uninterrupted_run(examples_args(tiny_repos["vit"], labelled_parquet, whole))
    saved = killed_after_progress(examples_args(tiny_repos["vit"], labelled_parquet, out), out)
    assert 8 <= saved < SCAN_CAP, saved

    again = run_cli(*examples_args(tiny_repos["vit"], labelled_parquet, out), env=ONE_THREAD)
    assert skipped_on_resume(again.stderr) == saved  # the rerun scanned only the other SCAN_CAP - saved images
    assert not (out / ".progress").exists()  # done: the progress went once the rows were saved
    finished(reference)
    rows, expected = load_rows(out), load_rows(whole)
    assert [r["feature"] for r in rows] == [r["feature"] for r in expected] == list(range(16))
    for row, want in zip(rows, expected):
        assert row["top_indices"] == want["top_indices"] and row["top_scores"] == want["top_scores"]
        for column in ("top_images", "patch_maps"):
            assert [np.asarray(i).tolist() for i in row[column]] == [np.asarray(i).tolist() for i in want[column]]


def test_killed_analysis_resumes_to_the_uninterrupted_result(tiny_repos, labelled_parquet, tmp_path):
    whole, out = tmp_path / "whole", tmp_path / "gallery"
    reference = uninterrupted_run(analyze_args(tiny_repos["vit"], labelled_parquet, whole))
    saved = killed_after_progress(analyze_args(tiny_repos["vit"], labelled_parquet, out), out)
    assert 8 <= saved < SCAN_ROWS, saved
    assert not (out / "analysis").exists()  # nothing but the progress was written

    again = run_cli(*analyze_args(tiny_repos["vit"], labelled_parquet, out), env=ONE_THREAD)
    assert skipped_on_resume(again.stderr) == saved
    assert not (out / ".progress").exists()
    table, resumed = Path(finished(reference).split()[0]), Path(again.stdout.split()[0])
    assert resumed.relative_to(out) == table.relative_to(whole)  # same settings, same run name
    assert resumed.read_text() == table.read_text()
