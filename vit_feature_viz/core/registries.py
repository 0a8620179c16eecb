"""The named choices of rendering: objectives, recipes and parametrizations, each name written once, here.

Torch-free: the targets are imported only when an entry is used, so the CLI offers these names as choices
without importing torch (tests/test_cli.py checks `--help`).
"""

from __future__ import annotations

from ..registry import Registry

OBJECTIVES = Registry("objective", __package__)
OBJECTIVES.register("feature", ".objectives:Feature")
OBJECTIVES.register("neuron", ".objectives:Neuron")
OBJECTIVES.register("cls", ".objectives:ClsToken")
OBJECTIVES.register("residual", ".objectives:Residual")
OBJECTIVES.register("logit", ".objectives:Logit")
OBJECTIVES.register("prompt", ".prompts:Prompt")  # a CLIP text prompt: needs its text (core/requested.py)
OBJECTIVES.register("prompt-cls", ".prompts:PromptCls")

RECIPES = Registry("recipe", __package__)
RECIPES.register("paper", ".recipes:PAPER")
RECIPES.register("fourier", ".recipes:FOURIER")
RECIPES.register("maco", ".recipes:MACO")
RECIPES.register("fast", ".recipes:FAST")
RECIPES.register("fast-std", ".recipes:FAST_STD")
RECIPES.register("tuned", ".recipes:TUNED")
DEFAULT_RECIPE = "fast"  # the best measured by benchmarks/bench_quality.py (README: Which recipe); CLI, app, library

PARAMETRIZATIONS = Registry("parametrization", __package__)
PARAMETRIZATIONS.register("pixel", ".params:PixelImage")
PARAMETRIZATIONS.register("fourier", ".params:FourierImage")
PARAMETRIZATIONS.register("fourier-std", ".params:StandardizedFourierImage")
PARAMETRIZATIONS.register("maco", ".params:MacoImage")
