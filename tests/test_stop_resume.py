"""A run stopped by a real signal keeps every finished feature, and the rerun completes it to exactly the result
of an uninterrupted run (SIGTERM: one line and exit 143; SIGKILL: no chance to clean up at all)."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from test_cli import CLI, load_rows, run_cli

FEATURES, STEPS = "0-9", 15


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
    run_cli(*render_args(tiny_repos["vit"], out))
    return load_rows(out)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signalled_run_keeps_finished_features_and_resumes_to_the_same_result(tiny_repos, tmp_path, uninterrupted, sig):
    out = tmp_path / "gallery"
    run = subprocess.Popen([*CLI, *render_args(tiny_repos["vit"], out)], stderr=subprocess.PIPE, text=True)
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

    again = run_cli(*render_args(tiny_repos["vit"], out))
    assert f"rendered {10 - len(saved)} feature(s)" in again.stderr
    rows = load_rows(out)
    assert [r["feature"] for r in rows] == [r["feature"] for r in uninterrupted] == list(range(10))
    for row, whole in zip(rows, uninterrupted):
        assert np.array_equal(np.asarray(row["image"]), np.asarray(whole["image"]))
        assert row["activation"] == whole["activation"] and row["activation_init"] == whole["activation_init"]
