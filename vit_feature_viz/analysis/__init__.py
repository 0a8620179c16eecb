"""The paper's experiments for any checkpoint, one module each, sharing one dataset loop (data.py), one
accuracy loop and result format (common.py) and one plotting module (plots.py).

Every experiment returns an `AnalysisResult`; `.save(folder)` writes `analysis/<experiment>/<run>.csv` (with
the settings) and `.png` into a gallery folder, which `push` uploads with the gallery.
"""

import importlib
import sys
import types

from ..registry import Registry

# Imported on first use (PEP 562): `vit-feature-viz --help` registers the analyze command through this package
# and must not import torch or the experiments to do so.
_EXPORTS = {
    "clip_names": ".clip_names", "feature_names": ".clip_names", "cls_isolation": ".cls_isolation",
    "AnalysisResult": ".common", "ANALYSIS_DIR": ".common", "foreground_background": ".foreground_background", "frequency": ".frequency",
    "per_block_cls": ".per_block_cls", "token_pooling": ".token_pooling", "cls_attention": ".cls_attention",
    "cue_conflict": ".cue_conflict", "block_removal": ".block_removal", "occlusion": ".occlusion",
    "patch_shuffle": ".patch_shuffle",
}
# The experiments by the names the CLI offers (`analyze EXPERIMENT`), each function imported when first run.
EXPERIMENTS = Registry("experiment", __name__)
EXPERIMENTS.register("cls-isolation", ".cls_isolation:cls_isolation")
EXPERIMENTS.register("token-pooling", ".token_pooling:token_pooling")
EXPERIMENTS.register("per-block-cls", ".per_block_cls:per_block_cls")
EXPERIMENTS.register("foreground-background", ".foreground_background:foreground_background")
EXPERIMENTS.register("frequency", ".frequency:frequency")
EXPERIMENTS.register("clip-names", ".clip_names:clip_names")
EXPERIMENTS.register("cls-attention", ".cls_attention:cls_attention")
EXPERIMENTS.register("cue-conflict", ".cue_conflict:cue_conflict")
EXPERIMENTS.register("block-removal", ".block_removal:block_removal")
EXPERIMENTS.register("occlusion", ".occlusion:occlusion")
EXPERIMENTS.register("patch-shuffle", ".patch_shuffle:patch_shuffle")


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """Each experiment function keeps its name when its submodule of the same name is imported (the import
    system would otherwise set the package attribute to the module)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = ["ANALYSIS_DIR", "AnalysisResult", "EXPERIMENTS", "clip_names", "cls_attention", "cls_isolation",
           "cue_conflict", "feature_names", "foreground_background", "frequency", "per_block_cls", "token_pooling"]
__all__ += ["block_removal", "occlusion", "patch_shuffle"]
