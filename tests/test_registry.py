"""The one Registry of every kind of named choice: unknown names, order, lazy targets, and that every entry loads."""

import subprocess
import sys

import pytest

from vit_feature_viz.core.recipes import Recipe
from vit_feature_viz.core.registries import DEFAULT_RECIPE, OBJECTIVES, PARAMETRIZATIONS, RECIPES
from vit_feature_viz.errors import VizError
from vit_feature_viz.registry import Registry


def test_unknown_name_is_one_line_naming_the_choices():
    with pytest.raises(VizError) as caught:
        RECIPES.get("magic")
    assert str(caught.value) == "Unknown recipe 'magic': use one of paper, fourier, maco, fast, fast-std, tuned."
    assert "\n" not in str(caught.value)


def test_names_keep_the_order_of_registration_and_refuse_twice():
    colours = Registry("colour")
    colours.register("red", 1)
    colours.register("green")(2)  # the decorator form

    @colours.register("blue")
    def blue():
        return 3

    assert colours.names() == ("red", "green", "blue") == tuple(colours)
    assert colours.get("green") == 2 and colours["blue"] is blue and "red" in colours and len(colours) == 3
    with pytest.raises(ValueError):
        colours.register("red", 4)


def test_a_lazy_target_is_imported_only_on_get():
    lazy = Registry("thing")
    lazy.register("missing", "a_module_that_does_not_exist:value")
    lazy.register("path", "os.path:join")
    assert lazy.names() == ("missing", "path")  # declaring imported nothing
    import os.path

    assert lazy.get("path") is os.path.join
    with pytest.raises(ModuleNotFoundError):
        lazy.get("missing")


def test_the_rendering_names_import_no_torch():
    code = ("import sys\nfrom vit_feature_viz.core.registries import OBJECTIVES, RECIPES, PARAMETRIZATIONS\n"
            "print(OBJECTIVES.names(), RECIPES.names(), PARAMETRIZATIONS.names())\n"
            "print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False"


def test_every_rendering_entry_loads():
    from vit_feature_viz.core.objectives import Channel
    from vit_feature_viz.core.params import ImageParametrization

    assert all(isinstance(OBJECTIVES.get(name)(3), Channel) for name in OBJECTIVES)
    assert all(issubclass(PARAMETRIZATIONS.get(name), ImageParametrization) for name in PARAMETRIZATIONS)
    for name in RECIPES:
        recipe = RECIPES.get(name)
        assert isinstance(recipe, Recipe) and recipe.name == name and recipe.parametrization in PARAMETRIZATIONS
    assert DEFAULT_RECIPE in RECIPES


def test_every_backend_loads_with_its_weight_files():
    from vit_feature_viz.models.backends import BACKENDS, Backend

    assert BACKENDS.names() == ("open_clip", "timm", "transformers")
    for name in BACKENDS:
        backend = BACKENDS.get(name)
        assert isinstance(backend, Backend) and callable(backend.load)
        assert all(f.endswith((".safetensors", ".safetensors.index.json")) for f in backend.safe_weights)
        assert backend.pickle_weights and not any(".safetensors" in f for f in backend.pickle_weights)


def test_every_experiment_loads_and_analyze_help_imports_no_torch():
    from vit_feature_viz.analysis import EXPERIMENTS

    assert EXPERIMENTS.names() == ("cls-isolation", "token-pooling", "per-block-cls", "foreground-background",
                                   "frequency", "clip-names", "cls-attention", "cue-conflict", "block-removal",
                                   "occlusion", "patch-shuffle")
    assert all(callable(EXPERIMENTS.get(name)) for name in EXPERIMENTS)
    code = ("import runpy, sys\nsys.argv = ['vit-feature-viz', 'analyze', '--help']\n"
            "try:\n    runpy.run_module('vit_feature_viz', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "clip-names" in result.stdout, result.stderr
    assert result.stdout.splitlines()[-1] == "False"
