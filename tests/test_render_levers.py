"""The renderer's ways of doing less work for the same picture: coarse phases, plateau stop, out-of-memory halving,
and the choice of precision. Real tiny and trained checkpoints; a real allocation failure for the memory test."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from vit_feature_viz import VizError, load_model, render
from vit_feature_viz.core.recipes import RECIPES, Phase, Plateau
from vit_feature_viz.core.render import is_out_of_memory
from vit_feature_viz.device import cpu_has_bf16_units, resolve_precision


def test_compute_counts_coarse_phases_by_their_tokens():
    recipe = dataclasses.replace(RECIPES["fourier"], steps=100, copies=4, phases=(Phase(0.5, 0.5, 2),))
    assert recipe.phase_at(0, 100) == Phase(0.5, 0.5, 2) and recipe.phase_at(49, 100) == Phase(0.5, 0.5, 2)
    assert recipe.phase_at(50, 100) == Phase(1.0, 1.0, 4)
    assert recipe.compute() == pytest.approx(50 * 2 * 0.25 + 50 * 4)
    assert RECIPES["paper"].compute() == 400 * 8


def test_a_coarse_phase_shows_the_model_fewer_tokens_then_the_full_image(tiny_repos):
    model = load_model(tiny_repos["vit"], device="cpu")
    sides = []
    handle = model.module.register_forward_pre_hook(lambda m, args, kwargs: sides.append(kwargs["pixel_values"].shape),
                                                    with_kwargs=True)
    recipe = dataclasses.replace(RECIPES["fourier"], phases=(Phase(0.5, 0.5, 2),))
    try:
        result = render(model, 1, [3], recipe=recipe, steps=8, progress=False)[0]
    finally:
        handle.remove()
    size = model.image_size
    steps_seen = sides[1:-1]  # the first and last passes score the un-augmented image
    assert [tuple(s[-2:]) for s in steps_seen] == [(size // 2, size // 2)] * 4 + [(size, size)] * 4
    assert [s[0] for s in steps_seen] == [2] * 4 + [4] * 4  # copies per feature in each phase
    assert result.image.size == (size, size)


def test_a_clean_phase_shows_the_model_the_image_it_returns(tiny_repos):
    model = load_model(tiny_repos["vit"], device="cpu")
    seen = []
    handle = model.module.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["pixel_values"].detach()),
                                                    with_kwargs=True)
    recipe = dataclasses.replace(RECIPES["paper"], phases=(Phase(0.5, 1.0, 2), Phase(1.0, 1.0, 2, clean=True)))
    try:
        render(model, 1, [3], recipe=recipe, steps=2, progress=False)
    finally:
        handle.remove()
    scored, augmented_step, clean_step = seen[0], seen[1], seen[2]  # before the steps, step 0, step 1
    assert not torch.allclose(augmented_step[0], scored[0], atol=1e-3)  # an augmented copy
    assert not torch.allclose(clean_step[1], clean_step[0], atol=1e-3)  # the second copy stays augmented
    # the clean copy is the image after one optimizer step: close to the scored start, not a jittered view of it
    assert (clean_step[0] - scored[0]).abs().mean() < (augmented_step[0] - scored[0]).abs().mean()


@pytest.fixture(scope="module")
def shapes_model(trained_paths):
    return load_model(trained_paths["shapes-shape-vit-a"], device="cpu")


def test_plateau_stops_features_early_without_depending_on_the_batch(shapes_model):
    recipe = dataclasses.replace(RECIPES["fourier"], steps=96, plateau=Plateau(patience=8, tolerance=0.05, min_fraction=0.25))
    batch = render(shapes_model, 3, [20, 132, 197], recipe=recipe, progress=False, batch_size=3)
    assert all(r.steps == 96 for r in batch)  # the budget asked for is what the gallery records
    assert any(r.steps_run < 96 for r in batch), [r.steps_run for r in batch]
    assert all(24 <= r.steps_run <= 96 for r in batch)
    alone = render(shapes_model, 3, [132], recipe=recipe, progress=False)[0]
    twin = batch[1]
    assert alone.steps_run == twin.steps_run
    assert np.abs(np.asarray(alone.image, np.int16) - np.asarray(twin.image, np.int16)).max() <= 1
    full = render(shapes_model, 3, [20, 132, 197], recipe=dataclasses.replace(recipe, plateau=None), progress=False)
    for stopped, finished in zip(batch, full):  # stopping on a plateau keeps most of what the full run reaches
        assert stopped.activation > stopped.activation_init
        assert stopped.activation >= 0.8 * finished.activation, (stopped.activation, finished.activation)


def test_plateau_waits_a_whole_patience_before_judging(tiny_repos):
    """With few steps the patience outlasts min_fraction: the first judgement needs `patience` steps of history."""
    model = load_model(tiny_repos["vit"], device="cpu")
    recipe = dataclasses.replace(RECIPES["fourier"], steps=40, plateau=Plateau(patience=32, min_fraction=0.25))
    results = render(model, 1, [3, 5], recipe=recipe, progress=False)
    assert all(33 <= r.steps_run <= 40 for r in results)


def test_recognizes_out_of_memory_errors():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory"))
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("could not create a primitive"))  # oneDNN, when its allocation fails
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))


OOM_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import torch
    from vit_feature_viz import load_model, render, VizError

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

    model = load_model(sys.argv[1], device="cpu", precision="fp32")
    options = dict(recipe="paper", steps=2, image_size=2 * model.image_size, progress=False)
    # warm up (one-time allocations happen now) with one feature at `warm` x the model's size, and see how much
    # address space it needed at its peak; then cap the data segment at what is in use plus the headroom: three
    # times that need (one feature fits with room to spare; 16 features need five times more than the cap)
    warm, peak = int(sys.argv[3]), status("VmPeak:")
    render(model, 3, [0], batch_size=1, recipe="paper", steps=2, image_size=warm * model.image_size, progress=False)
    needed = max(0, status("VmPeak:") - peak)
    headroom = 3 * needed + 20 * 2**20 if sys.argv[2] == "measured" else int(sys.argv[2]) * 2**20
    resource.setrlimit(resource.RLIMIT_DATA, (status("VmData:") + headroom, resource.RLIM_INFINITY))
    print("needed", needed, "headroom", headroom, file=sys.stderr)
    try:
        results = render(model, 3, list(range(16)), batch_size=16, **options)
        print(json.dumps({"features": [r.feature for r in results], "error": None}))
    except VizError as error:
        print(json.dumps({"features": [], "error": str(error)}))
""")


# glibc's malloc, left to itself, makes the memory a batch needs depend on what else runs: threads that meet a
# busy lock get arenas of their own (more of them on a loaded machine), and the heap keeps what a failed batch
# freed in the arena that freed it, where the next, smaller batch may not find it; a moving mmap threshold puts
# big tensors in those heaps too. One arena and a fixed threshold (big blocks are mapped, and returned when
# freed) make the accounting the same on every run, so the cap below holds or fails the same way under any load.
DETERMINISTIC_MALLOC = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}


def run_capped(tmp_path, model_path, headroom: str, warm: str) -> tuple[dict, str]:
    """Run OOM_SCRIPT in its own process, with DETERMINISTIC_MALLOC: (its JSON result, its stderr)."""
    script = tmp_path / "oom.py"
    script.write_text(OOM_SCRIPT)
    run = subprocess.run([sys.executable, str(script), str(model_path), headroom, warm], capture_output=True,
                         text=True, timeout=300, env={**os.environ, **DETERMINISTIC_MALLOC})
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1]), run.stderr


def test_a_batch_too_big_for_memory_is_halved_instead_of_crashing(trained_paths, tmp_path):
    """A real allocation failure: the process's data segment is capped at three times what a one-feature batch
    needs, so 16 features x 8 copies at twice the model's size cannot be allocated, and the renderer halves the
    batch. (The halving continues until a batch fits, so every feature is rendered.)"""
    out, stderr = run_capped(tmp_path, trained_paths["shapes-shape-vit-a"], "measured", "2")
    assert out == {"features": list(range(16)), "error": None}
    assert "Out of memory with 16 features per batch: continuing with 8." in stderr


def test_out_of_memory_with_one_feature_is_one_line(trained_paths, tmp_path):
    out, _ = run_capped(tmp_path, trained_paths["shapes-shape-vit-a"], "1", "1")
    assert out["features"] == [] and out["error"].startswith("Out of memory with a single feature per batch")
    assert "\n" not in out["error"]


def test_auto_precision_takes_bf16_only_where_the_cpu_has_bf16_units(monkeypatch):
    monkeypatch.delenv("VFV_PRECISION", raising=False)
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if cpu_has_bf16_units() else "fp32")
    monkeypatch.setenv("VFV_PRECISION", "fp32")
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"  # an explicit choice is kept
    monkeypatch.setenv("VFV_PRECISION", "fp8")
    with pytest.raises(VizError, match="VFV_PRECISION='fp8' is not a precision"):
        resolve_precision("auto", torch.device("cpu"))


THREADS_SCRIPT = textwrap.dedent("""
    import os, sys
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # this process may use one CPU
    import torch
    from vit_feature_viz import load_model
    torch.set_num_threads(4)
    load_model(sys.argv[1], device="cpu")
    print(torch.get_num_threads())
    os.environ["OMP_NUM_THREADS"] = "4"  # the user's explicit choice, read at every load
    torch.set_num_threads(4)
    load_model(sys.argv[1], device="cpu")
    print(torch.get_num_threads())
""")


def test_loading_a_model_caps_torch_threads_at_the_usable_cpus(trained_paths, tmp_path):
    """More threads than CPUs oversubscribe the cores (README: Speed, 40x slower on 2 cores with 4 threads)."""
    script = tmp_path / "threads.py"
    script.write_text(THREADS_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    # one process for both loads (each process pays for importing torch): capped, then the user's setting kept
    run = subprocess.run([sys.executable, str(script), trained_paths["shapes-shape-vit-a"]], capture_output=True,
                         text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-2:] == ["1", "4"]  # an explicit setting is the user's choice
