"""The paper's experiments for any checkpoint, one module each, sharing one dataset loop (data.py), one
accuracy loop and result format (common.py) and one plotting module (plots.py).

Every experiment returns an `AnalysisResult`; `.save(folder)` writes `analysis/<experiment>/<run>.csv` (with
the settings) and `.png` into a gallery folder, which `push` uploads with the gallery.
"""

from .clip_names import clip_names, feature_names
from .cls_isolation import cls_isolation
from .common import ANALYSIS_DIR, AnalysisResult
from .foreground_background import foreground_background
from .frequency import frequency
from .per_block_cls import per_block_cls
from .token_pooling import token_pooling

EXPERIMENTS = {
    "cls-isolation": cls_isolation,
    "token-pooling": token_pooling,
    "per-block-cls": per_block_cls,
    "foreground-background": foreground_background,
    "frequency": frequency,
    "clip-names": clip_names,
}

__all__ = ["ANALYSIS_DIR", "AnalysisResult", "EXPERIMENTS", "clip_names", "cls_isolation", "feature_names",
           "foreground_background", "frequency", "per_block_cls", "token_pooling"]
