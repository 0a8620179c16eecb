"""Helpers shared by the test files (fixtures live in conftest.py and the *_fixtures.py plugins it names).

Imported by name (`from helpers import snapshot`): tests/ is on sys.path (conftest.py puts it there).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLI = [sys.executable, "-m", "vit_feature_viz"]


def run_cli(*args, env=None, check=True, timeout=None) -> subprocess.CompletedProcess[str]:
    """`python -m vit_feature_viz args` as a real process (a fresh interpreter, as a user runs it); with `check`,
    it must succeed."""
    result = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load_rows(folder) -> list[dict]:
    """A gallery folder's rows as `datasets` loads them, in (layer, feature) order."""
    import datasets

    return sorted(datasets.load_dataset(str(folder), split="train"), key=lambda r: (r["layer"], r["feature"]))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (dotfiles included) with its bytes: equal snapshots mean nothing was written."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    """The same size and RGB values, whatever the mode or encoding."""
    return a.size == b.size and np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))
