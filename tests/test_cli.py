"""The command line end to end: gallery folders that `datasets` loads, bad input, resume, and scale-out."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import free_port, load_rows, run_cli, snapshot
from vit_feature_viz import jobs, load_model, render
from vit_feature_viz.cli import main
from vit_feature_viz.core.registries import DEFAULT_RECIPE


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "train").mkdir()
    for i in range(10):
        Image.fromarray((rng.random((36, 44, 3)) * 255 * (i + 1) / 10).astype(np.uint8)).save(root / "train" / f"{i}.png")
    return root


def test_console_script_is_installed():
    assert shutil.which("vit-feature-viz"), "pip install -e . provides the vit-feature-viz command"
    assert "render" in subprocess.run(["vit-feature-viz", "--help"], capture_output=True, text=True).stdout


def test_render_writes_a_dataset_folder_that_grows_without_losing_rows(tiny_repos, tmp_path, capsys):
    """The first run is a real process; the two that add to its folder call main() here (the folder on disk is
    what they share, and each process would pay ~3 s of importing torch)."""
    out = tmp_path / "gallery"
    run_cli("render", tiny_repos["timm_vit"], "--layer", 1, "--features", "0,5", "--steps", 3, "--out", out, "--quiet")
    first = load_rows(out)
    assert [r["feature"] for r in first] == [0, 5]
    row = first[0]
    assert row["model_id"] == tiny_repos["timm_vit"] and row["layer"] == 1 and row["objective"] == "feature"
    assert row["recipe"] == DEFAULT_RECIPE and row["steps"] == 3 and row["seed"] == 0
    assert row["image"].size == (32, 32) and row["image_patch_map"].size == (32, 32)
    assert isinstance(row["activation"], float) and isinstance(row["activation_init"], float)
    assert "configs:" in (out / "README.md").read_text()

    layer_2 = ["render", tiny_repos["timm_vit"], "--layer", "2", "--features", "1-3", "--steps", "3", "--out", str(out), "--quiet"]
    assert main(layer_2) == 0
    rows = load_rows(out)
    assert [(r["layer"], r["feature"]) for r in rows] == [(1, 0), (1, 5), (2, 1), (2, 2), (2, 3)]
    assert np.array_equal(np.asarray(rows[0]["image"]), np.asarray(first[0]["image"]))

    capsys.readouterr()
    assert main(layer_2) == 0
    assert "rendered 0 feature(s)" in capsys.readouterr().err  # finished features are not redone
    assert len(load_rows(out)) == 5


BAD_INPUT = [
    (["render", "tiny-org/nope", "--layer", 0, "--features", 0], "not in the local cache"),
    (["render", "tiny-org/resnet", "--layer", 0, "--features", 0], "no transformer blocks"),
    (["render", "tiny-org/vit-classifier", "--layer", 7, "--features", 0], "Layer 7 is out of range"),
    (["render", "tiny-org/vit-classifier", "--layer", 0, "--features", "120-130"], "Feature 128 is out of range"),
    (["render", "tiny-org/vit-classifier", "--layer", 0, "--features", "3-x"], "Cannot read feature spec"),
    (["render", "tiny-org/vit-model", "--layer", 0, "--features", 0, "--objective", "logit"], "no classification head"),
    (["render", "tiny-org/vit-classifier", "--layer", 0, "--features", 0, "--recipe", "magic"], "invalid choice"),
    (["examples", "tiny-org/vit-classifier", "--layer", 0, "--features", 0, "--dataset", "/no/such/dir"], "No dataset folder"),
]


@pytest.fixture(scope="module")
def rendered_folder(tiny_repos, tmp_path_factory):
    out = tmp_path_factory.mktemp("rendered") / "gallery"
    assert main(["render", tiny_repos["vit"], "--layer", "0", "--features", "1", "--steps", "1", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.parametrize("args,message", BAD_INPUT, ids=[m for _, m in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_leaves_the_folder_alone(rendered_folder, capsys, args, message):
    before = snapshot(rendered_folder)
    capsys.readouterr()
    try:
        code = main([*map(str, args), "--out", str(rendered_folder)])
    except SystemExit as exit:  # argparse's own checks exit instead of returning
        code = exit.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "it/s]" not in line]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert snapshot(rendered_folder) == before


def test_bad_input_from_the_real_command_has_no_traceback(rendered_folder):
    before = snapshot(rendered_folder)
    result = run_cli("render", "tiny-org/vit-classifier", "--layer", 9, "--features", 0, "--out", rendered_folder, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: Layer 9 is out of range")
    assert snapshot(rendered_folder) == before


def test_gallery_command_merges_render_and_examples(tiny_repos, tmp_path, image_folder):
    out = tmp_path / "gallery"  # main() here: the merge is under test, not the process (one costs ~3 s of imports)
    assert main(["gallery", tiny_repos["clip"], "--layer", "1", "--features", "2,3", "--steps", "2", "--dataset",
                 str(image_folder), "--top-k", "3", "--out", str(out), "--quiet"]) == 0
    rows = load_rows(out)
    assert [r["feature"] for r in rows] == [2, 3]
    for row in rows:
        assert row["image"] is not None and row["activation"] is not None
        assert len(row["top_images"]) == len(row["patch_maps"]) == len(row["top_scores"]) == 3
        assert row["top_scores"] == sorted(row["top_scores"], reverse=True)
        assert row["dataset"] == str(image_folder)


def test_interrupted_run_keeps_finished_features_and_resumes(tiny_repos, tmp_path, monkeypatch):
    model = load_model(tiny_repos["vit"], device="cpu")
    out = tmp_path / "gallery"
    real_chunk = jobs.render_planned.__globals__["_render_chunk"]
    calls = []

    def interrupt_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_chunk(*args, **kwargs)

    monkeypatch.setitem(jobs.render_planned.__globals__, "_render_chunk", interrupt_third_batch)
    with pytest.raises(KeyboardInterrupt):
        jobs.render_to_folder(model, out, 0, "0-4", steps=2, batch_size=1, progress=False)
    assert sorted(r["feature"] for r in load_rows(out)) == [0, 1]
    monkeypatch.setitem(jobs.render_planned.__globals__, "_render_chunk", real_chunk)
    assert jobs.render_to_folder(model, out, 0, "0-4", steps=2, batch_size=1, progress=False) == [2, 3, 4]
    assert sorted(r["feature"] for r in load_rows(out)) == [0, 1, 2, 3, 4]


LAUNCHERS = {
    # accelerate's multi-CPU launch goes through MPI; a hostfile on loopback gives two local processes
    "cpu-mpi": ["--cpu", "--num_processes", "2", "--mpirun_hostfile", "{hostfile}"],
    # torchrun-style launch, what a multi-GPU machine uses
    "torchrun": ["--multi_gpu", "--num_processes", "2"],
}


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_accelerate_launch_two_processes_equals_one(tiny_repos, tmp_path, launcher, image_folder):
    if launcher == "cpu-mpi" and not shutil.which("mpirun"):
        pytest.skip("needs mpirun (Debian openmpi-bin, installed by .ci/run)")
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_btl="self,tcp",
               MASTER_PORT=str(free_port()))
    args = [a.format(hostfile=hostfile) for a in LAUNCHERS[launcher]]
    multi = tmp_path / "multi"
    command = ["accelerate", "launch", *args, "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "vit_feature_viz", "gallery", tiny_repos["timm_vit"], "--layer", "1", "--features", "0-4", "--steps",
               "3", "--dataset", str(image_folder), "--top-k", "2", "--out", str(multi), "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((multi / "data").glob("train-r1-*.parquet"))) == 1  # the second process wrote its own shard

    single = render(load_model(tiny_repos["timm_vit"], device="cpu"), 1, "0-4", steps=3, progress=False)
    rows = load_rows(multi)
    assert [r["feature"] for r in rows] == [0, 1, 2, 3, 4]
    for row, expected in zip(rows, single):
        assert np.abs(np.asarray(row["image"], dtype=int) - np.asarray(expected.image, dtype=int)).max() <= 1
        assert row["activation"] == pytest.approx(expected.activation, abs=1e-3)
        assert len(row["top_images"]) == 2


# --- conventions: version, help, lazy imports, default split, estimate ------------------------------------
HEAVY_MODULES = ("torch", "transformers", "timm", "open_clip", "datasets", "huggingface_hub", "gradio")


@pytest.mark.parametrize("argv", [["--help"], ["render", "--help"], ["--version"]], ids=["help", "render-help", "version"])
def test_help_and_version_import_nothing_heavy(argv):
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['vit-feature-viz', *{argv!r}]\n"
        "try:\n    runpy.run_module('vit_feature_viz', run_name='__main__')\n"
        "except SystemExit as exit:\n    assert exit.code in (0, None), exit.code\n"
        f"print('heavy:', sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "heavy: []"


def test_version_and_defaults_in_help():
    import vit_feature_viz

    assert run_cli("--version").stdout.strip() == f"vit-feature-viz {vit_feature_viz.__version__}"
    help_text = " ".join(run_cli("examples", "--help").stdout.split())
    assert "(default: 8)" in help_text and "(default: feature)" in help_text and "(default: auto)" in help_text
    assert "first of test, validation, train" in help_text and "(default: None)" not in help_text


def test_choice_names_match_the_libraries_tables():
    from vit_feature_viz import OBJECTIVES, RECIPES

    assert cli_choices("render", "--objective") == tuple(OBJECTIVES)
    assert cli_choices("render", "--recipe") == tuple(RECIPES)


def cli_choices(command: str, option: str) -> tuple:
    """The choices the CLI's parser offers for `command option`."""
    import argparse

    from vit_feature_viz import cli

    commands = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    return tuple(next(a for a in commands.choices[command]._actions if option in a.option_strings).choices)


def test_lazy_package_keeps_render_the_function():
    import importlib

    import vit_feature_viz

    importlib.import_module("vit_feature_viz.core.render")
    assert callable(vit_feature_viz.render) and vit_feature_viz.render.__name__ == "render"
    assert vit_feature_viz.render is importlib.import_module("vit_feature_viz.core.render").render
    with pytest.raises(AttributeError):
        vit_feature_viz.no_such_name


def test_examples_without_split_uses_test_then_validation_then_train(tiny_repos, tmp_path):
    from vit_feature_viz.image_datasets import default_split, open_image_dataset

    assert default_split(["train", "validation", "test"]) == "test"
    assert default_split(["train", "validation"]) == "validation"
    assert default_split(["train"]) == "train" and default_split(["extra", "more"]) == "extra"
    rng = np.random.default_rng(1)
    for split, count in (("train", 3), ("test", 2)):
        (tmp_path / "data" / split).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "data" / split / f"{i}.png")
    dataset, column = open_image_dataset(tmp_path / "data")
    assert len(dataset) == 2 and column == "image"

    out = tmp_path / "gallery"
    assert main(["examples", tiny_repos["vit"], "--layer", "0", "--features", "0", "--dataset", str(tmp_path / "data"),
                 "--top-k", "5", "--out", str(out), "--quiet"]) == 0
    [row] = load_rows(out)
    assert sorted(row["top_indices"]) == [0, 1]  # the two test images, not the three train ones


def test_features_all_prints_an_estimate_first(tiny_repos, tmp_path, capsys):
    out = tmp_path / "gallery"
    code = main(["render", tiny_repos["vit"], "--layer", "0", "--features", "all", "--objective", "residual",
                 "--steps", "3", "--batch-size", "16", "--out", str(out), "--quiet"])
    assert code == 0
    lines = capsys.readouterr().err.strip().splitlines()
    estimate = [line for line in lines if line.startswith("estimated time: about ")]
    assert len(estimate) == 1 and "every feature of layer 0 on 1 process(es)" in estimate[0]
    assert lines.index(estimate[0]) < lines.index(next(line for line in lines if line.startswith("rendered ")))
    assert len(load_rows(out)) == 32


def test_estimate_is_measured_and_zero_without_steps(tiny_repos):
    from vit_feature_viz.core.render import estimate_seconds

    model = load_model(tiny_repos["vit"], device="cpu")
    assert estimate_seconds(model, 0, "0-15", objective="residual", steps=50, batch_size=4) > 0
    assert estimate_seconds(model, 0, "0-15", objective="residual", steps=0, batch_size=4) == 0.0
