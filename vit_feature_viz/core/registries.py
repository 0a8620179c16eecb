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
OBJECTIVES.register("sae", "..sae.objective:SaeLatent")  # a sparse autoencoder's latent (needs --sae)
OBJECTIVES.register("sae-neuron", "..sae.objective:SaeNeuron")
OBJECTIVES.register("sae-cls", "..sae.objective:SaeCls")
SAE_OBJECTIVES = ("sae", "sae-neuron", "sae-cls")  # need an SAE (--sae): not offered where none can be given
OBJECTIVES.register("prompt", ".prompts:Prompt")  # a CLIP text prompt: needs its text (core/requested.py)
OBJECTIVES.register("prompt-cls", ".prompts:PromptCls")

RECIPES = Registry("recipe", __package__)
RECIPES.register("paper", ".recipes:PAPER")
RECIPES.register("fourier", ".recipes:FOURIER")
RECIPES.register("maco", ".recipes:MACO")
RECIPES.register("fast", ".recipes:FAST")
RECIPES.register("fast-std", ".recipes:FAST_STD")
RECIPES.register("tuned", ".recipes:TUNED")
# CLI, app and library default: chosen on the real DINOv2-S/14 (benchmarks/bench_real.py, README: On a real trained
# ViT), where `fast` paints grey images and fails at late blocks; the toys (bench_quality.py) prefer `fast`.
DEFAULT_RECIPE = "fast-std"

PARAMETRIZATIONS = Registry("parametrization", __package__)
PARAMETRIZATIONS.register("pixel", ".params:PixelImage")
PARAMETRIZATIONS.register("fourier", ".params:FourierImage")
PARAMETRIZATIONS.register("fourier-std", ".params:StandardizedFourierImage")
PARAMETRIZATIONS.register("maco", ".params:MacoImage")
