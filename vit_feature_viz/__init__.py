"""vit-feature-viz: see what Vision Transformers learn.

    from vit_feature_viz import load_model, render
    model = load_model("google/vit-base-patch16-224")
    results = render(model, layer=5, features=[0, 1, 2])

The public names are imported on first use (PEP 562), so `import vit_feature_viz` and `vit-feature-viz --help`
do not pay for importing torch.
"""

from __future__ import annotations

import importlib

from .errors import VizError

__version__ = "0.1.0"

_EXPORTS = {
    "OBJECTIVES": ".core.registries", "Objective": ".core.objectives", "make_objective": ".core.objectives",
    "RECIPES": ".core.registries", "get_recipe": ".core.recipes",
    "RenderResult": ".core.render", "render": ".core.render", "render_batches": ".core.render",
    "VisionModel": ".models", "load_model": ".models",
    "accentuate": ".core.accentuate",
}
__all__ = sorted([*_EXPORTS, "VizError"])


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

