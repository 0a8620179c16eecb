"""The gallery shipped inside the package: a few blocks of the built-in shapes model rendered with the default
recipe, their top examples and patch maps from the built-in shapes set, and the paper's analyses of that model
(scripts/build_builtin_gallery.py makes it). It opens by name with no network, also on a Space where visitors may
not name server folders: it is package data, not a path someone typed.
"""

from __future__ import annotations

from pathlib import Path

BUILTIN_GALLERY = "vit-feature-viz/shapes-gallery"
BUILTIN_GALLERY_DIR = Path(__file__).resolve().parents[1] / "data" / "builtin_gallery"


def builtin_gallery_path(name: str) -> Path | None:
    """The package folder of the built-in gallery when `name` is its name, else None."""
    return BUILTIN_GALLERY_DIR if str(name or "").strip() == BUILTIN_GALLERY else None
