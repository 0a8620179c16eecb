"""vit-feature-viz: see what Vision Transformers learn.

    from vit_feature_viz import load_model, render
    model = load_model("google/vit-base-patch16-224")
    results = render(model, layer=5, features=[0, 1, 2])
"""

from .errors import VizError
from .models import VisionModel, load_model
from .objectives import OBJECTIVES, Objective, make_objective
from .recipes import RECIPES, get_recipe
from .render import RenderResult, render, render_batches

__all__ = ["OBJECTIVES", "Objective", "RECIPES", "RenderResult", "VisionModel", "VizError", "get_recipe",
           "load_model", "make_objective", "render", "render_batches"]
__version__ = "0.1.0"
