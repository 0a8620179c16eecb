"""Names the CLI offers as choices, free of torch so `vit-feature-viz --help` answers at once.

core/objectives.py and core/recipes.py build their tables under exactly these names (tests/test_cli.py checks).
"""

OBJECTIVE_NAMES = ("feature", "neuron", "cls", "residual", "logit")
RECIPE_NAMES = ("paper", "fourier", "maco", "fast", "tuned")
DEFAULT_RECIPE = "fast"  # the best measured by benchmarks/bench_quality.py (README: Which recipe); CLI, app, library
