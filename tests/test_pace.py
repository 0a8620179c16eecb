"""Time left and progress of a render (issue 19 item 6): the pace is measured after the first steps' warm-up and
extrapolated over every feature-step left, and the count moves within a batch, not only when features finish."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vit_feature_viz.app import common
from vit_feature_viz.app.common import ModelCache
from vit_feature_viz.app.render_tab import Renderer
from vit_feature_viz.core.pace import Pace


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_warm_up_is_left_out_and_every_batch_left_is_counted():
    """2 batches of 2 features x 100 steps (400 feature-steps); the first report, at step 5, comes after a 10 s
    warm-up, then each batch-step takes 0.2 s (0.1 s per feature-step)."""
    clock = FakeClock()
    pace = Pace(total=400, clock=clock)
    assert pace.text() == "estimating time left"
    clock.now = 10.0
    pace.update(10)  # step 5 of batch 1, both features: 10 feature-steps, after the warm-up
    assert pace.seconds_left() is None  # one point measures no pace
    clock.now = 11.0
    pace.update(20)  # 5 more batch-steps in 1 s
    assert pace.seconds_left() == pytest.approx(0.1 * 380)  # not 11 s / 20 x 380 = 209 s, warm-up included
    assert pace.text() == "about 38 s left"
    clock.now = 29.0
    pace.update(200)  # batch 1 done: the second batch is still ahead
    assert pace.seconds_left() == pytest.approx(0.1 * 200)
    clock.now = 49.0
    pace.update(400)
    assert pace.seconds_left() == 0 and pace.done == pace.total


def test_minutes_and_out_of_range_counts():
    clock = FakeClock()
    pace = Pace(total=10_000, clock=clock)
    pace.update(0)
    clock.now = 10.0
    pace.update(100)
    assert pace.text() == "about 16 min left"  # 0.1 s x 9,900
    pace.update(20_000)  # a count past the total is the total
    assert pace.done == 10_000


def test_the_apps_count_moves_before_the_batch_ends(vit, tmp_path, monkeypatch):
    """/render's progress while 2 features render in one batch: feature-steps rise step by step, while no feature
    is finished yet (the old status said 0/2 until the end)."""
    monkeypatch.setattr(common, "SESSION_ROOT", tmp_path / "sessions")
    preset = SimpleNamespace(name="test", max_steps=20, max_features=2, max_image_size=48, max_gpu_seconds=60,
                             gpu_duration=lambda features, steps: 60)
    reports = []

    def progress(value=None, desc=None, unit=None):
        if isinstance(value, tuple):
            reports.append((value, desc))

    *_, (images, table, folder) = Renderer(preset, ModelCache()).render(vit, 1, "0,1", "feature", "fast", 20, 0, 0,
                                                                         None, progress=progress)
    assert len(images) == 2
    within = [(done, desc) for (done, total), desc in reports if 0 < done < total]
    assert len({done for done, _ in within}) >= 3, reports  # it moves, several times, inside the one batch
    assert all("0/2 features finished" in desc and "feature-steps" in desc for _, desc in within)
    assert within[0][0] < within[-1][0] and reports[-1][0] == (40, 40)
    assert any("s left" in desc for _, desc in within[1:])  # measured once a second report is in
