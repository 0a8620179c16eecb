"""vit-feature-viz: see what Vision Transformers learn.

    from vit_feature_viz import load_model, render
    model = load_model("google/vit-base-patch16-224")
    results = render(model, layer=5, features=[0, 1, 2])

The public names are imported on first use (PEP 562), so `import vit_feature_viz` and `vit-feature-viz --help`
do not pay for importing torch.
"""

from __future__ import annotations

import importlib
import sys
import types

from .errors import VizError

__version__ = "0.1.0"

_EXPORTS = {
    "OBJECTIVES": ".objectives", "Objective": ".objectives", "make_objective": ".objectives",
    "RECIPES": ".recipes", "get_recipe": ".recipes",
    "RenderResult": ".render", "render": ".render", "render_batches": ".render",
    "VisionModel": ".models", "load_model": ".models",
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


class _Package(types.ModuleType):
    """The function `render` keeps its name when the submodule `render` is imported (the import system would
    otherwise set the package attribute to the module)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
